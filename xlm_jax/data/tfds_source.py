"""Export tensorflow-datasets corpora into the raw corpus layout (see `xlm_jax.data.corpus`).

    python -m xlm_jax.data.tfds_source NAME OUT_DIR [--data-dir gs://…] [--split train] [--langs …]
                                       [--max-examples N] [--force]

OUT_DIR must be new, empty or an earlier export (which is replaced); another directory is refused unless
--force (`xlm_jax.core.outputs`).

NAME (feature names as in the tensorflow-datasets 4.9 builders):
    wiki40b/{lang}        `text` with _START_ARTICLE_ / _START_PARAGRAPH_ / _NEWLINE_ markers; splits train,
                          validation, test
    c4/multilingual       mC4: `text`; the SPLIT is the language (`de`, `de-validation`); other c4 configs
                          (c4/en …) are English with splits train, validation
    para_crawl/en{xx}     Translation {en, xx}; split train
    ted_multi_translate   TranslationVariableLanguages `translations` {language, translation}; train,
                          validation, test (every en ↔ X pair of a talk is written)
    opus/{config}         Translation {de, en} (medical, law, koran, IT, subtitles); split train
Language codes with a hyphen (ted's pt-br, zh-cn; mC4's bg-Latn) are written with an underscore (pt_br):
the corpus layout separates the two languages of a pair with a hyphen.
A name, config or split that does not exist is a UserError before anything is read. TensorFlow is optional:
it is imported only here, and its absence is a clear error naming the `[tfds]` extra. The field mapping lives
in pure functions over plain dicts (`example_records`), tested with and without TensorFlow.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from xlm_jax.core import outputs
from xlm_jax.core.errors import ArgumentParser, UserError, exit_on_user_error, positive_int

SUPPORTED = ("wiki40b", "c4", "para_crawl", "ted_multi_translate", "opus")
# Split names of each family, from the builders' _split_generators (c4/multilingual: see `_check_split`).
SPLITS = {"wiki40b": ("train", "validation", "test"), "c4": ("train", "validation"), "para_crawl": ("train",),
          "ted_multi_translate": ("train", "validation", "test"), "opus": ("train",)}


def _text(value) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _lang(value) -> str:
    # "pt-br" -> "pt_br": a hyphen inside a code would split para/{l1}-{l2} at the wrong place.
    return _text(value).replace("-", "_")


def _lines(text: str) -> list[str]:
    # wiki40b marks structure inline; paragraphs become sentences-per-line, markers are dropped.
    for marker in ("_START_ARTICLE_", "_START_SECTION_", "_START_PARAGRAPH_"):
        text = text.replace(marker, "\n")
    return [line.strip() for line in text.replace("_NEWLINE_", "\n").split("\n") if line.strip()]


def example_records(name: str, example: dict, lang: str | None = None) -> Iterator[tuple[str, object]]:
    """One tfds example (plain dict, bytes or str) → ("mono", (lang, [lines])) / ("para", ((l1, s1), (l2, s2)))."""
    family = name.split("/")[0]
    if family == "wiki40b":
        yield "mono", (_lang(lang or name.split("/")[1]), _lines(_text(example["text"])))
    elif family == "c4":
        yield "mono", (_lang(lang or "en"), _lines(_text(example["text"])))
    elif family == "ted_multi_translate":
        translations = example["translations"]
        sides = dict(zip(map(_lang, translations["language"]), map(_text, translations["translation"])))
        if "en" in sides:
            for other, text in sides.items():
                if other != "en":
                    yield "para", (("en", _text(sides["en"])), (other, text))
    elif family in ("para_crawl", "opus"):
        if "translation" in example:
            example = example["translation"]
        (l1, s1), (l2, s2) = sorted(example.items())[:2]
        yield "para", ((_lang(l1), _text(s1)), (_lang(l2), _text(s2)))
    else:
        raise UserError(f"tfds dataset {name!r} is not supported; use one of {', '.join(SUPPORTED)}")


def write_records(records: Iterable[tuple[str, object]], out_dir: Path, langs: list[str] | None = None) -> dict:
    """Write records into out_dir/mono and out_dir/para (l1 < l2 naming); returns lines per file."""
    mono: dict[str, list[str]] = defaultdict(list)
    para: dict[str, tuple[list[str], list[str]]] = defaultdict(lambda: ([], []))
    for kind, record in records:
        if kind == "mono":
            lang, lines = record
            if lines and (not langs or lang in langs):
                mono[lang] += [*lines, ""]  # a blank line ends each document
        else:
            (a, sa), (b, sb) = sorted(record)
            if langs and not {a, b} <= set(langs):
                continue
            sa, sb = " ".join(sa.split()), " ".join(sb.split())
            if sa and sb:
                para[f"{a}-{b}"][0].append(sa)
                para[f"{a}-{b}"][1].append(sb)
    counts = {}
    for lang, lines in mono.items():
        (out_dir / "mono").mkdir(parents=True, exist_ok=True)
        (out_dir / "mono" / f"{lang}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
        counts[f"mono/{lang}.txt"] = sum(1 for l in lines if l)
    for stem, (left, right) in para.items():
        (out_dir / "para").mkdir(parents=True, exist_ok=True)
        l1, l2 = stem.split("-")
        (out_dir / "para" / f"{stem}.{l1}").write_text("\n".join(left) + "\n", encoding="utf-8")
        (out_dir / "para" / f"{stem}.{l2}").write_text("\n".join(right) + "\n", encoding="utf-8")
        counts[f"para/{stem}"] = len(left)
    return counts


def _import_tfds():
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        raise UserError("tensorflow-datasets is not installed: install the [tfds] extra (pip install 'xlm_jax[tfds]'), "
                        "or use files in the released formats instead") from None
    return tfds


def split_names(split: str) -> list[str]:
    """The split names in a tfds split spec: "train[:10%]+validation" -> ["train", "validation"]."""
    return [part.split("[")[0].strip() for part in split.split("+")]


def check_split(name: str, split: str, valid: Sequence[str], builder_splits: Iterable[str] = ()) -> None:
    """UserError unless every split named in `split` is one of `valid` (or of the prepared builder's splits)."""
    known = set(valid) | set(builder_splits)
    for part in split_names(split):
        if part not in known:
            names = sorted(known)
            listed = ", ".join(names[:16]) + (f", … ({len(names)} in all)" if len(names) > 16 else "")
            raise UserError(f"tfds {name}: split {part!r} does not exist" + (f" (in {split!r})" if part != split else "")
                            + f"; its splits are {listed}")


def open_builder(name: str, data_dir: str | None = None):
    """-> (tfds module, builder) for `name` ("dataset" or "dataset/config"). UserError naming the dataset or
    config (and the configs that exist) when tfds does not know it; no data is read or downloaded."""
    tfds = _import_tfds()
    try:
        return tfds, tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError:
        raise UserError(f"tensorflow-datasets has no dataset {name.split('/')[0]!r} (in {name!r})") from None
    except ValueError as err:
        if "BuilderConfig" not in str(err):
            raise
        family = name.split("/")[0]
        configs = [c.name for c in tfds.builder_cls(family).BUILDER_CONFIGS]
        raise UserError(f"tfds dataset {family!r} has no config {name.partition('/')[2]!r}; its configs are "
                        f"{', '.join(configs[:40])}{' …' if len(configs) > 40 else ''}") from None


def load_split(tfds, name: str, split: str, data_dir: str | None = None):
    """`tfds.load(name, split=split, data_dir=data_dir)`; a download that fails (no network, a moved URL, a
    manual-download dataset) is a UserError naming the dataset and the way out (a prepared --data-dir)."""
    try:
        return tfds.load(name, split=split, data_dir=data_dir)
    except (OSError, AssertionError) as err:  # requests' ConnectionError is an OSError; manual downloads assert
        first = str(err).strip().splitlines()[0][:300] if str(err).strip() else type(err).__name__
        raise UserError(f"tfds could not download or prepare {name} (split {split}): {first}; give --data-dir / "
                        f"data_dir= a directory where {name} is already prepared") from None


def _c4_languages() -> tuple[str, ...]:
    try:
        from tensorflow_datasets.text import c4
        return tuple(c4.MC4_LANGUAGES)
    except (ImportError, AttributeError):  # moved in another tfds version: accept any code, tfds will check
        return ()


def export(name: str, out_dir: str, data_dir: str | None = None, split: str = "train",
           langs: list[str] | None = None, max_examples: int | None = None, force: bool = False) -> dict:
    """Writes the corpus into `out_dir` (new, empty or an earlier export, replaced atomically; another directory
    is a UserError unless `force`, which replaces it); returns lines per file.

    Raises UserError, before anything is read, for a family outside SUPPORTED, a dataset / config tfds does not
    know, or a split the builder does not have; and when the split gave no text (for `langs`)."""
    out = outputs.check_dir(out_dir, "data.tfds_source", force=force)
    langs = [_lang(x) for x in langs] if langs else langs
    family = name.split("/")[0]
    if family not in SUPPORTED:
        raise UserError(f"tfds dataset {name!r} is not supported; use one of {', '.join(SUPPORTED)}")
    tfds, builder = open_builder(name, data_dir)
    if "/" not in name and builder.builder_config is not None:  # "wiki40b" is tfds' default config, "wiki40b/en"
        name = f"{name}/{builder.builder_config.name}"
    prepared = list(builder.info.splits) if builder.info.splits else []
    lang = None
    if name == "c4/multilingual":
        # mC4's splits are its languages: "de", "de-validation".
        codes = _c4_languages()
        parts = split_names(split)
        valid = [c for code in codes for c in (code, f"{code}-validation")]
        if codes:
            check_split(name, split, valid, prepared)
        langs_in_split = {p.removesuffix("-validation") for p in parts}
        if len(langs_in_split) > 1:
            raise UserError(f"tfds {name}: split {split!r} mixes languages {sorted(langs_in_split)}; export one "
                            "language per call (the split is the language)")
        lang = langs_in_split.pop()
    else:
        check_split(name, split, SPLITS[family], prepared)
    ds = load_split(tfds, name, split, data_dir)
    if max_examples:
        ds = ds.take(max_examples)
    records = (r for ex in tfds.as_numpy(ds) for r in example_records(name, ex, lang))

    def write(tmp: Path) -> dict:
        counts = write_records(records, tmp, langs)
        if not counts:
            raise UserError(f"tfds {name} split {split} gave no text" + (f" for languages {langs}" if langs else ""))
        return counts

    return outputs.write_atomically(out, write, "data.tfds_source")


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(prog="python -m xlm_jax.data.tfds_source", description=__doc__.split("\n\n")[0])
    parser.add_argument("name")
    parser.add_argument("out_dir")
    parser.add_argument("--data-dir")
    parser.add_argument("--split", default="train")
    parser.add_argument("--langs", nargs="+")
    parser.add_argument("--max-examples", type=positive_int)
    parser.add_argument("--force", action="store_true",
                        help="replace OUT_DIR even if it holds files this command did not write (they are deleted)")
    args = parser.parse_args(argv)
    with exit_on_user_error():
        counts = export(args.name, args.out_dir, args.data_dir, args.split, args.langs, args.max_examples, args.force)
    for path, n in sorted(counts.items()):
        print(f"{path:<24} {n:>10}")


if __name__ == "__main__":
    main()
