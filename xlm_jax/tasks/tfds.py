"""Task data from TensorFlow Datasets (the `[tfds]` extra): XNLI, XTREME's XNLI / PAWS-X, WikiANN, Tatoeba, BUCC."""

from __future__ import annotations

from xlm_jax.core.errors import UserError
from xlm_jax.tasks.base import _text
from xlm_jax.tasks.classification import tfds_pawsx_example, tfds_xnli_examples
from xlm_jax.tasks.ner import tfds_wikiann_example
from xlm_jax.data.tfds_source import check_split, load_split, open_builder  # tensorflow itself loads on use


def tfds_pair_sentences(record: dict) -> tuple[str, str]:
    """tfds `tatoeba/tatoeba_{lang}` (source: the xx sentence, target: its English) and `bucc/bucc_{lang}`
    (the gold pairs only, with source_id / target_id): source_sentence, target_sentence."""
    return _text(record["source_sentence"]), _text(record["target_sentence"])


# name -> (builder name pattern, languages of the per-language configs or None, splits); from the
# tensorflow-datasets 4.9 builders.
TFDS_TASKS: dict[str, tuple[str, tuple[str, ...] | None, tuple[str, ...]]] = {
    "xnli": ("xnli", None, ("test", "validation")),
    "xtreme_xnli": ("xtreme_xnli", None, ("train",)),  # XTREME's translate-train (MultiNLI machine-translated)
    "xtreme_pawsx": ("xtreme_pawsx/{lang}", ("de", "es", "fr", "ja", "ko", "zh"), ("train",)),
    "wikiann": ("wikiann/{lang}", None, ("train", "validation", "test")),
    "tatoeba": ("tatoeba/tatoeba_{lang}", None, ("train",)),
    "bucc": ("bucc/bucc_{lang}", ("de", "fr", "ru", "zh"), ("validation", "test")),  # validation: BUCC's sample
}


def load_tfds(name: str, split: str, data_dir: str | None = None, lang: str = "en") -> list:
    """Reads a task from tensorflow_datasets (the `[tfds]` extra). name: xnli, xtreme_xnli, xtreme_pawsx,
    wikiann, tatoeba, bucc (per-language builders take `lang`). Returns Examples (xnli, xtreme_xnli,
    xtreme_pawsx), TokenExamples (wikiann) or (source, target) sentence pairs (tatoeba: (xx, English); bucc:
    the gold pairs).

    Raises UserError, before reading, for an unknown name, a language without a config, or a split the
    builder does not have (`split` may slice or add: "train[:1000]", "validation+test")."""
    if name not in TFDS_TASKS:
        raise UserError(f"unknown tfds dataset {name!r}; known: {', '.join(TFDS_TASKS)}")
    pattern, langs, splits = TFDS_TASKS[name]
    if langs is not None and lang not in langs:
        raise UserError(f"tfds {name} has no language {lang!r}; its languages are {', '.join(langs)}")
    builder_name = pattern.format(lang=lang)
    tfds, builder = open_builder(builder_name, data_dir)
    check_split(builder_name, split, splits, builder.info.splits or ())
    features = builder.info.features
    ds = tfds.as_numpy(load_split(tfds, builder_name, split, data_dir))
    if name in ("xnli", "xtreme_xnli"):
        return [ex for r in ds for ex in tfds_xnli_examples(r, label_names=features["label"].names)]
    if name == "xtreme_pawsx":
        return [tfds_pawsx_example(r, lang) for r in ds]
    if name == "wikiann":
        return [tfds_wikiann_example(r, lang, features["tags"].feature.names) for r in ds]
    return [tfds_pair_sentences(r) for r in ds]

