"""Tokenize a raw corpus once into memory-mappable id arrays (format: docs/data_format.md).

    python -m xlm_jax.preprocess CORPUS_DIR --tokenizer PATH.model --out DIR [--max-len 256] [--workers N]
        [--valid-fraction 0.01 --test-fraction 0.01] [--langs de en …] [--too-long truncate|drop]

Tokenization runs over all cores (a process pool; each worker loads the SentencePiece model once) in
chunks of lines. The output is written to a temporary directory and renamed into place, so an interrupted
run leaves the previous output (or nothing). A re-run whose inputs (file sizes and mtimes, tokenizer sha256,
options) are unchanged does nothing and prints "up to date". --out must be new, empty or an earlier output of
preprocess (which is replaced); anything else is refused unless --force (`xlm_jax.core.outputs`).

Per sentence: a blank line in a mono file starts a new document; a sentence longer than --max-len pieces
is truncated to --max-len or dropped (--too-long); a sentence with no piece at all is dropped; a pair is
dropped or truncated when either side is. Counts go into the manifest, as do lines with invalid UTF-8
(decoded with U+FFFD).

Held-out split of a flat corpus (--valid-fraction / --test-fraction; a corpus with train/ valid/ test/
directories keeps its own): a sentence held out anywhere is held out everywhere, so no valid / test sentence
of a language is stored in a train split of that language, as a mono line or as a side of a pair. A sentence
is a language and its stored ids; the sentences linked through pairs form a translation group, and a group goes
to one split as a whole, by a hash of its smallest text. The fractions are the probability that a group is held
out (in expectation the same fraction of lines and pairs). Details: `xlm_jax.data.heldout`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from xlm_jax.core import outputs
from xlm_jax.core.processes import worker_pool
from xlm_jax.data.corpus import SPLITS, PreprocessedCorpus, RawSource, read_lines, scan_corpus
from xlm_jax.data.heldout import HeldOutSplit
from xlm_jax.core.errors import ArgumentParser, UserError, check_range, exit_on_user_error, fraction, positive_int
from xlm_jax.data.tokenizer import Tokenizer

FORMAT = 1
CHUNK_LINES = 2000

_worker_tokenizer: Tokenizer | None = None


def _init_worker(path: str, lowercase: bool) -> None:
    global _worker_tokenizer
    _worker_tokenizer = Tokenizer.load(path, lowercase_and_strip_accents=lowercase)


def _tokenize_chunk(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    arrays = _worker_tokenizer.encode_batch_pieces_ids(texts, special_tokens=False)  # corpus text stays text
    lengths = np.fromiter((len(a) for a in arrays), dtype=np.int64, count=len(arrays))
    ids = np.concatenate(arrays) if arrays else np.zeros(0, np.int32)
    return ids.astype(np.int32, copy=False), lengths


def tokenize_texts(texts: list[str], pool, desc: str, progress: bool) -> list[np.ndarray]:
    """Ids (without specials) of every text, in order, using `pool` (or this process when None)."""
    from tqdm import tqdm

    chunks = [texts[i : i + CHUNK_LINES] for i in range(0, len(texts), CHUNK_LINES)]
    results = pool.imap(_tokenize_chunk, chunks) if pool else map(_tokenize_chunk, chunks)
    out = []
    for ids, lengths in tqdm(results, total=len(chunks), desc=desc, unit="chunk", disable=not progress, leave=False):
        out += np.split(ids, np.cumsum(lengths)[:-1]) if len(lengths) else []
    return out


def source_hash(sources: list[RawSource], corpus_dir: Path, tokenizer_sha: str, options: dict) -> str:
    files = []
    for src in sources:
        for f in src.files:
            st = f.stat()
            files.append([str(f.relative_to(corpus_dir)), st.st_size, st.st_mtime_ns])
    blob = json.dumps({"files": files, "tokenizer": tokenizer_sha, "options": options, "format": FORMAT}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def _fit(ids: np.ndarray, max_len: int, too_long: str) -> np.ndarray | None:
    """The sentence as stored: None when dropped (empty, or too long with --too-long drop)."""
    if len(ids) == 0 or (len(ids) > max_len and too_long == "drop"):
        return None
    return ids[:max_len]


def _save(stem: Path, sentences: list[np.ndarray]) -> None:
    offsets = np.zeros(len(sentences) + 1, dtype=np.int64)
    np.cumsum([len(s) for s in sentences], out=offsets[1:])
    ids = np.concatenate(sentences).astype(np.int32) if sentences else np.zeros(0, np.int32)
    np.save(f"{stem}.ids.npy", ids)
    np.save(f"{stem}.offsets.npy", offsets)


def _mono(src, lines, ids, split_of, max_len, too_long, out: Path) -> dict:
    """Write one mono file's sentences into each split; returns {split: stats}."""
    kept = {s: [] for s in SPLITS}
    docs = {s: [] for s in SPLITS}
    stats = {s: {"sentences": 0, "tokens": 0, "dropped": 0, "truncated": 0} for s in SPLITS}
    new_doc = {s: True for s in SPLITS}
    k = 0
    for line in lines:
        if not line.strip():
            new_doc = {s: True for s in SPLITS}
            continue
        split, sent = split_of[k], ids[k]
        k += 1
        fitted = _fit(sent, max_len, too_long)
        st = stats[split]
        if fitted is None:
            st["dropped"] += 1
            continue
        st["truncated"] += len(sent) > max_len
        if new_doc[split]:
            docs[split].append(len(kept[split]))
            new_doc[split] = False
        kept[split].append(fitted)
        st["sentences"] += 1
        st["tokens"] += len(fitted)
    for split in _present(src, split_of):
        d = out / split / "mono"
        d.mkdir(parents=True, exist_ok=True)
        _save(d / src.name, kept[split])
        np.save(d / f"{src.name}.docs.npy", np.asarray(docs[split], dtype=np.int64))
    return {s: stats[s] for s in _present(src, split_of)}


def _para(src, ids_a, ids_b, split_of, max_len, too_long, out: Path) -> dict:
    l1, l2 = src.langs
    kept = {s: ([], []) for s in SPLITS}
    stats = {s: {"sentences": 0, "tokens": {l1: 0, l2: 0}, "dropped": 0, "truncated": 0} for s in SPLITS}
    for split, a, b in zip(split_of, ids_a, ids_b):
        fa, fb = _fit(a, max_len, too_long), _fit(b, max_len, too_long)
        st = stats[split]
        if fa is None or fb is None:
            st["dropped"] += 1
            continue
        st["truncated"] += len(a) > max_len or len(b) > max_len
        kept[split][0].append(fa)
        kept[split][1].append(fb)
        st["sentences"] += 1
        st["tokens"][l1] += len(fa)
        st["tokens"][l2] += len(fb)
    for split in _present(src, split_of):
        d = out / split / "para"
        d.mkdir(parents=True, exist_ok=True)
        _save(d / f"{src.name}.{l1}", kept[split][0])
        _save(d / f"{src.name}.{l2}", kept[split][1])
    return {s: stats[s] for s in _present(src, split_of)}


def _read_texts(src: RawSource, invalid_utf8: dict[str, int], log) -> list[list[str]]:
    texts = []
    for f in src.files:
        lines, bad = read_lines(f)
        if bad:
            invalid_utf8[str(f)] = bad
            log(f"warning: {f}: {bad} lines with invalid UTF-8 (bytes replaced by U+FFFD)")
        texts.append(lines)
    return texts


def _present(src: RawSource, split_of: list[str]) -> list[str]:
    # A flat corpus writes every split it was asked for (even if a tiny language got no held-out line), so
    # every language has the same splits; a split-directory corpus writes the file's own split.
    return [src.split] if src.split else sorted(set(split_of) | {"train"}, key=SPLITS.index)


def preprocess_corpus(
    corpus_dir: str | os.PathLike,
    tokenizer_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    max_len: int = 256,
    workers: int | None = None,
    valid_fraction: float = 0.0,
    test_fraction: float = 0.0,
    langs: list[str] | None = None,
    too_long: str = "truncate",
    lowercase_and_strip_accents: bool = False,
    progress: bool = False,
    log=lambda msg: None,
    force: bool = False,
) -> dict:
    """Preprocess `corpus_dir` into `out_dir` (unless already up to date); returns the manifest.

    `out_dir` must be new, empty or an earlier output of preprocess (replaced when the inputs changed); another
    directory is a UserError unless `force` (then it is replaced, its files deleted). It may not overlap the
    corpus or hold the tokenizer, --force or not."""
    if too_long not in ("truncate", "drop"):
        raise UserError(f"--too-long {too_long!r} must be 'truncate' or 'drop'")
    if max_len < 1:
        raise UserError(f"--max-len {max_len} must be at least 1")
    if workers is not None:
        check_range("--workers", workers, 1, integer=True)
    if not (0 <= valid_fraction < 1 and 0 <= test_fraction < 1 and valid_fraction + test_fraction < 1):
        raise UserError(f"--valid-fraction {valid_fraction} and --test-fraction {test_fraction} must be in [0, 1) with a sum < 1")
    corpus_dir = Path(corpus_dir)
    out = outputs.check_dir(out_dir, "preprocess", force=force, legacy="manifest.json")
    outputs.check_overlap(out, corpus_dir, "corpus")
    if Path(tokenizer_path).exists():
        outputs.check_overlap(out, tokenizer_path, "tokenizer")
    sources = scan_corpus(corpus_dir, langs)
    tok = Tokenizer.load(tokenizer_path, lowercase_and_strip_accents)
    flat = sources[0].split is None
    options = {
        "max_len": max_len,
        "too_long": too_long,
        "lowercase_and_strip_accents": lowercase_and_strip_accents,
        "valid_fraction": valid_fraction if flat else None,
        "test_fraction": test_fraction if flat else None,
        "heldout": "translation groups" if flat else None,  # xlm_jax.data.heldout; older outputs split by line
        "langs": sorted(langs) if langs else None,
    }
    digest = source_hash(sources, corpus_dir, tok.sha256, options)
    manifest_path = out / "manifest.json"
    if manifest_path.is_file():
        try:
            previous = json.loads(manifest_path.read_text())
        except ValueError:
            previous = {}
        if isinstance(previous, dict) and previous.get("source_hash") == digest and _intact(out, log):
            log(f"{out} is up to date")
            return previous

    start = time.perf_counter()
    tmp = outputs.staging_dir(out)
    splits: dict[str, dict] = {}
    invalid_utf8: dict[str, int] = {}
    workers = workers or os.cpu_count() or 1
    pool = None
    try:
        if workers > 1:
            # No fork once JAX runs threads (preprocessing from inside a training process): see core.processes.
            pool = worker_pool(workers, initializer=_init_worker, initargs=(tok.path, lowercase_and_strip_accents))
        else:
            _init_worker(tok.path, lowercase_and_strip_accents)
        heldout = HeldOutSplit(valid_fraction, test_fraction) if flat else None
        # Every pair file is tokenized before anything is split: a pair's split depends on every pair that
        # shares a sentence with it (xlm_jax.data.heldout).
        para = {}
        for src in sources:
            if src.kind == "para":
                texts = _read_texts(src, invalid_utf8, log)
                ids = [tokenize_texts(t, pool, f"{src.name}.{lang}", progress) for t, lang in zip(texts, src.langs)]
                para[src] = texts, ids
                if heldout is not None:
                    heldout.link_pairs(src.langs, texts, [[_fit(x, max_len, too_long) for x in side] for side in ids])
        for src in sources:
            if src.kind == "mono":
                texts = _read_texts(src, invalid_utf8, log)
                sentences = [line for line in texts[0] if line.strip()]
                ids = tokenize_texts(sentences, pool, src.name, progress)
                split_of = [src.split] * len(sentences) if src.split else heldout.mono_splits(
                    src.langs[0], sentences, [_fit(x, max_len, too_long) for x in ids])
                result = _mono(src, texts[0], ids, split_of, max_len, too_long, tmp)
            else:
                texts, (ids_a, ids_b) = para.pop(src)
                split_of = [src.split] * len(ids_a) if src.split else heldout.pair_splits(
                    src.langs, texts, [[_fit(x, max_len, too_long) for x in side] for side in (ids_a, ids_b)])
                result = _para(src, ids_a, ids_b, split_of, max_len, too_long, tmp)
            for split, stats in result.items():
                splits.setdefault(split, {"mono": {}, "para": {}})[src.kind][src.name] = stats
        manifest = {
            "format": FORMAT,
            "tokenizer": {
                "path": str(Path(tok.path).resolve()),
                "sha256": tok.sha256,
                "vocab_size": len(tok),
                "mask_id": tok.mask_id,
                "pad_id": tok.pad_id,
                "bos_id": tok.bos_id,
                "eos_id": tok.eos_id,
                "unk_id": tok.unk_id,
            },
            "splits": {s: splits[s] for s in SPLITS if s in splits},
            "langs": sorted({lang for src in sources for lang in src.langs}),
            "max_len": max_len,
            "source_hash": digest,
            "corpus": str(corpus_dir.resolve()),
            "options": options,
            "invalid_utf8_lines": invalid_utf8,
            "seconds": round(time.perf_counter() - start, 2),
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
        outputs.move_into_place(tmp, out, "preprocess")
    except BaseException as err:
        # Reported before the partial output is removed: the free space is what the write had.
        reported = outputs.as_user_error(err, out, "could not write the output; what was there is unchanged")
        shutil.rmtree(tmp, ignore_errors=True)
        if reported is not err:
            raise reported from err
        raise
    finally:
        if pool:
            pool.terminate()
    return manifest


def _intact(out: Path, log) -> bool:
    """Whether an up-to-date output can be kept: a damaged one (an array missing or truncated) is rebuilt."""
    try:
        PreprocessedCorpus(out)
        return True
    except UserError as err:
        log(f"rebuilding: {err}")
        return False


def format_summary(manifest: dict) -> str:
    rows = [f"{'split':<6} {'data':<12} {'sentences':>10} {'tokens':>11} {'dropped':>8} {'truncated':>9}"]
    for split, data in manifest["splits"].items():
        for kind in ("mono", "para"):
            for name, st in data[kind].items():
                tokens = st["tokens"] if kind == "mono" else sum(st["tokens"].values())
                rows.append(f"{split:<6} {name:<12} {st['sentences']:>10} {tokens:>11} {st['dropped']:>8} {st['truncated']:>9}")
    return "\n".join(rows)
