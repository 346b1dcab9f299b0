import pytest

from xlm_jax.data.tfds_source import example_records, write_records


def test_field_mapping_without_tf(tmp_path):
    wiki = {"text": b"_START_ARTICLE_\nTitel\n_START_PARAGRAPH_\nEin Satz._NEWLINE_Noch einer."}
    assert list(example_records("wiki40b/de", wiki)) == [("mono", ("de", ["Titel", "Ein Satz.", "Noch einer."]))]
    ted = {"translations": {"language": [b"en", b"fr", b"de"], "translation": [b"Hi there", b"Salut", b"Hallo"]}}
    assert list(example_records("ted_multi_translate", ted)) == [
        ("para", (("en", "Hi there"), ("fr", "Salut"))),
        ("para", (("en", "Hi there"), ("de", "Hallo"))),
    ]
    pc = {"en": b"Good day", "de": b"Guten Tag"}
    records = [*example_records("para_crawl/ende", pc), *example_records("wiki40b/de", wiki)]
    counts = write_records(records, tmp_path)
    assert counts == {"mono/de.txt": 3, "para/de-en": 1}
    assert (tmp_path / "para" / "de-en.de").read_text() == "Guten Tag\n"
    assert (tmp_path / "para" / "de-en.en").read_text() == "Good day\n"


def test_mock_data(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    from xlm_jax.data.tfds_source import export

    with tfds.testing.mock_data(num_examples=5):
        counts = export("wiki40b/de", str(tmp_path / "c"))
    assert counts["mono/de.txt"] > 0 and (tmp_path / "c" / "mono" / "de.txt").exists()
