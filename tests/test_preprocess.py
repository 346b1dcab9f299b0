import subprocess
import sys

import numpy as np
import pytest

from xlm_jax.data.corpus import PreprocessedCorpus, check_vocab, heldout_split
from xlm_jax.core.errors import UserError
from xlm_jax.data.preprocess import preprocess_corpus
from xlm_jax.data.tokenizer import Tokenizer, train_tokenizer

DE = ["Die Datei wurde gespeichert.", "Das Fenster ist geschlossen.", "Ein neuer Ordner entsteht hier."] * 40
EN = ["The file was saved.", "The window is closed.", "A new folder is created here."] * 40


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("pp")
    corpus = root / "corpus"
    (corpus / "mono").mkdir(parents=True)
    (corpus / "para").mkdir()
    de_mono = [f"{s} Nummer {i}." for i, s in enumerate(DE)]
    (corpus / "mono" / "de.txt").write_text("\n".join(de_mono[:60]) + "\n\n" + "\n".join(de_mono[60:]) + "\n")
    (corpus / "mono" / "en.txt").write_text("\n".join(f"{s} Number {i}." for i, s in enumerate(EN)) + "\n")
    (corpus / "para" / "de-en.de").write_text("\n".join(DE) + "\n")
    (corpus / "para" / "de-en.en").write_text("\n".join(EN) + "\n")
    model = root / "spm.model"
    train_tokenizer([str(corpus)], 70, str(model))
    return corpus, model, root


def test_round_trip_and_idempotent(setup):
    corpus, model, root = setup
    out = root / "out"
    manifest = preprocess_corpus(corpus, model, out, max_len=64, workers=2, valid_fraction=0.1, test_fraction=0.1)
    tok = Tokenizer.load(model)
    assert manifest["tokenizer"]["vocab_size"] == len(tok) and manifest["tokenizer"]["mask_id"] == len(tok) - 1
    assert manifest["langs"] == ["de", "en"]
    data = PreprocessedCorpus(out)
    lines = [l for l in (corpus / "mono" / "de.txt").read_text().splitlines() if l.strip()]
    by_split = {s: [l for l in lines if heldout_split(l, 0.1, 0.1) == s] for s in ("train", "valid", "test")}
    for split, expected in by_split.items():
        arr = data.mono(split, "de")
        assert arr.ids.dtype == np.int32 and arr.offsets.dtype == np.int64
        assert [arr.sentence(i).tolist() for i in range(len(arr))] == [tok.encode_pieces_ids(l) for l in expected]
        assert [tok.decode(arr.sentence(i)) for i in range(len(arr))] == expected
        assert manifest["splits"][split]["mono"]["de"]["sentences"] == len(expected)
    assert sum(len(v) for v in by_split.values()) == 120 and min(len(v) for v in by_split.values()) > 0
    docs = np.load(out / "train" / "mono" / "de.docs.npy")
    assert docs[0] == 0 and len(docs) == 2  # the blank line starts a second document
    de, en = data.para("train", "en", "de")[::-1]
    assert len(de) == len(en) == manifest["splits"]["train"]["para"]["de-en"]["sentences"]
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    again = preprocess_corpus(corpus, model, out, max_len=64, workers=2, valid_fraction=0.1, test_fraction=0.1)
    assert again == manifest
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == mtimes
    check_vocab(manifest, len(tok))
    with pytest.raises(UserError, match=f"vocab_size {len(tok)}.*vocab_size 250002"):
        check_vocab(manifest, 250002)


def test_too_long(setup):
    corpus, model, root = setup
    m = preprocess_corpus(corpus, model, root / "drop", max_len=4, workers=1, too_long="drop")
    assert m["splits"]["train"]["mono"]["de"]["dropped"] == 120 and m["splits"]["train"]["mono"]["de"]["sentences"] == 0
    m = preprocess_corpus(corpus, model, root / "trunc", max_len=4, workers=1)
    st = m["splits"]["train"]["mono"]["en"]
    assert st["truncated"] == 120 and st["tokens"] == 4 * 120
    assert PreprocessedCorpus(root / "trunc").mono("train", "en").lengths().max() == 4


def _corpus(tmp_path, files):
    for name, content in files.items():
        (tmp_path / "c" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "c" / name).write_bytes(content if isinstance(content, bytes) else content.encode())
    return tmp_path / "c"


def test_bad_inputs(setup, tmp_path):
    _, model, _ = setup
    with pytest.raises(UserError, match="empty corpus"):
        preprocess_corpus(_corpus(tmp_path / "a", {"README": "x"}), model, tmp_path / "o")
    with pytest.raises(UserError, match=r"mono/fr\.txt is empty"):
        preprocess_corpus(_corpus(tmp_path / "b", {"mono/fr.txt": "\n\n"}), model, tmp_path / "o")
    bad = _corpus(tmp_path / "d", {"para/de-en.de": "a\nb\nc\n", "para/de-en.en": "a\nb\n"})
    with pytest.raises(UserError, match=r"de-en\.de has 3 lines but .*de-en\.en has 2"):
        preprocess_corpus(bad, model, tmp_path / "o")
    with pytest.raises(UserError, match=r"no data for \['sw'\]; languages it has: \['de'\]"):
        preprocess_corpus(_corpus(tmp_path / "e", {"mono/de.txt": "Datei\n"}), model, tmp_path / "o", langs=["sw"])
    assert not (tmp_path / "o").exists()
    m = preprocess_corpus(_corpus(tmp_path / "f", {"mono/de.txt": b"gut\nschlecht \xff\xfe\n"}), model, tmp_path / "o", workers=1)
    assert list(m["invalid_utf8_lines"].values()) == [1] and m["splits"]["train"]["mono"]["de"]["sentences"] == 2


def test_cli_exit_code(setup, tmp_path):
    _, model, _ = setup
    result = subprocess.run(
        [sys.executable, "-m", "xlm_jax.preprocess", str(tmp_path / "missing"), "--tokenizer", str(model), "--out", str(tmp_path / "o")],
        capture_output=True, text=True,
    )
    assert result.returncode == 2 and result.stderr.startswith("error:") and "missing" in result.stderr


def test_heldout_split_deterministic():
    lines = [f"sentence {i}" for i in range(5000)]
    first = [heldout_split(l, 0.05, 0.05) for l in lines]
    assert first == [heldout_split(l, 0.05, 0.05) for l in reversed(lines)][::-1]
    assert 150 < first.count("valid") < 350 and 150 < first.count("test") < 350
    assert all(heldout_split(l, 0.0, 0.0) == "train" for l in lines[:10])


FORK_AFTER_JAX = """
import os, sys, warnings
warnings.simplefilter("error")  # Python 3.12+'s "multi-threaded, use of fork()" DeprecationWarning fails the run
import jax
jax.numpy.zeros(3).block_until_ready()  # the backend runs its threads now, as in a training process
def no_fork():
    raise AssertionError("os.fork() called after JAX started its threads")
os.fork = no_fork
from xlm_jax.core.processes import start_method, thread_count
from xlm_jax.data.preprocess import preprocess_corpus
assert thread_count() > 1 and start_method() == "spawn", (thread_count(), start_method())
m = preprocess_corpus(sys.argv[1], sys.argv[2], sys.argv[3], max_len=64, workers=2)
print("sentences", sum(s["sentences"] for s in m["splits"]["train"]["mono"].values()))
"""


def test_preprocessing_after_jax_started_never_forks(setup, tmp_path):
    """No fork after JAX has started threads (issue 20: model.init_from with a new corpus printed Python's
    os.fork() deadlock warning): the pool is spawned, the output equals a single-threaded process's."""
    corpus, model, _ = setup
    proc = subprocess.run([sys.executable, "-c", FORK_AFTER_JAX, str(corpus), str(model), str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "fork" not in proc.stderr and "Warning" not in proc.stderr, proc.stderr[-3000:]
    forked = preprocess_corpus(corpus, model, tmp_path / "forked", max_len=64, workers=2)  # no JAX threads here
    assert proc.stdout.split()[-1] == str(sum(s["sentences"] for s in forked["splits"]["train"]["mono"].values()))
    for name in ("de", "en"):
        np.testing.assert_array_equal(np.load(tmp_path / "out" / "train" / "mono" / f"{name}.ids.npy"),
                                      np.load(tmp_path / "forked" / "train" / "mono" / f"{name}.ids.npy"))


def test_worker_pool_forks_only_a_single_threaded_process():
    import threading

    from xlm_jax.core.processes import start_method, thread_count

    before = thread_count()
    stop = threading.Event()
    t = threading.Thread(target=stop.wait)
    t.start()
    try:
        assert thread_count() == before + 1 and start_method() == "spawn"
    finally:
        stop.set()
        t.join()
