"""Cross-lingual sentence retrieval as XTREME reports it: Tatoeba accuracy and BUCC 2018 bitext-mining F1.

Nothing here runs a model: the functions take sentence embeddings ([N, D] float arrays, e.g. from
`xlm_jax.evaluate.embed_sentences`) and the released files; `python -m xlm_jax.evaluate tatoeba | bucc` ties
the two together.

File layouts (as released):
- Tatoeba (LASER's `data/tatoeba/v1`): `tatoeba.{xxx}-eng.{xxx}` and `tatoeba.{xxx}-eng.eng`, line i of one
  the translation of line i of the other; xxx is LASER's ISO 639-3 code (deu, cmn, pes …). Two-letter codes
  are mapped with `TATOEBA_CODES` (the table of the tfds `tatoeba` builder); a code that is neither is looked
  up as given.
- BUCC 2018 (`bucc2018/{xx}-en/`): `{xx}-en.{split}.{xx}` and `{xx}-en.{split}.en` with one `id<TAB>sentence`
  per line, and `{xx}-en.{split}.gold` with `id_xx<TAB>id_en` per gold pair. The released gold splits are
  `sample` and `training` (the `test` gold was never released; XTREME tunes on sample and reports training).

Metrics:
- Tatoeba: accuracy of xx→en nearest-neighbour retrieval by cosine (XTREME's number), and en→xx.
- BUCC: ratio-margin scores over k nearest neighbours both ways (Artetxe & Schwenk 2019, "Margin-based
  Parallel Corpus Mining with Multilingual Sentence Embeddings", ACL; LASER's `mine_bitexts.py`):
      score(x, y) = cos(x, y) / (Σ_{z ∈ NN_k(x)} cos(x, z) / 2k + Σ_{z ∈ NN_k(y)} cos(y, z) / 2k)
  candidates are the best-scoring neighbour of every x (forward) and of every y (backward); they are taken by
  decreasing score, each sentence at most once (LASER's `--retrieval max`). The threshold maximising F1 on the
  tuning split (LASER's / XTREME's `bucc_optimize`: the midpoint between the last kept and the next candidate
  score) is applied to the test split's candidates: precision, recall, F1 against its gold pairs.

Nearest neighbours are exact (inner products of unit vectors): faiss (`faiss-cpu`, the `[mining]` extra) when
it is installed, else NumPy matrix products over row blocks whose similarities and selection temporaries stay
under `block_bytes` (default 256 MiB: 100k × 100k sentences never hold the 40 GB full matrix).
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from xlm_jax.core.errors import UserError
from xlm_jax.core.textfiles import open_text

# tfds `tatoeba` builder / LASER: XTREME's two-letter code -> the file's ISO 639-3 code.
TATOEBA_CODES = {
    "af": "afr", "ar": "ara", "bg": "bul", "bn": "ben", "de": "deu", "el": "ell", "es": "spa", "et": "est",
    "eu": "eus", "fa": "pes", "fi": "fin", "fr": "fra", "he": "heb", "hi": "hin", "hu": "hun", "id": "ind",
    "it": "ita", "ja": "jpn", "jv": "jav", "ka": "kat", "kk": "kaz", "ko": "kor", "ml": "mal", "mr": "mar",
    "nl": "nld", "pt": "por", "ru": "rus", "sw": "swh", "ta": "tam", "te": "tel", "th": "tha", "tl": "tgl",
    "tr": "tur", "ur": "urd", "vi": "vie", "zh": "cmn",
}
ISO3_TO_2 = {v: k for k, v in TATOEBA_CODES.items()}
DEFAULT_BLOCK_BYTES = 256 << 20
MIN_DENOMINATOR = 1e-6


# ------------------------------------------------------------------------------------------ neighbours


def normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (float32 [N, D]); an all-zero row stays zero (its cosines are 0)."""
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _faiss():
    try:
        import faiss
    except ImportError:
        return None
    return faiss


def knn(x: np.ndarray, y: np.ndarray, k: int, *, backend: str = "auto",
        block_bytes: int = DEFAULT_BLOCK_BYTES) -> tuple[np.ndarray, np.ndarray]:
    """The k rows of y most cosine-similar to each row of x.

    x: [N, D], y: [M, D] float. Returns (sims float32 [N, k'], indices int64 [N, k']) with k' = min(k, M), each
    row sorted by decreasing similarity. backend: "faiss" (IndexFlatIP, exact), "numpy" (blocked products: a
    block of similarities and its selection temporaries, 24 bytes per similarity, stay under `block_bytes`),
    "auto" (faiss when installed). Raises UserError for
    k < 1, an empty y, or mismatched widths."""
    if k < 1:
        raise UserError(f"k={k}: the number of neighbours must be >= 1")
    x, y = normalize(x), normalize(y)
    if len(y) == 0:
        raise UserError("no sentences to search among (the other side is empty)")
    if x.shape[1] != y.shape[1]:
        raise UserError(f"embedding widths differ: {x.shape[1]} and {y.shape[1]}")
    k = min(k, len(y))
    faiss = _faiss() if backend in ("auto", "faiss") else None
    if backend == "faiss" and faiss is None:
        raise UserError("backend='faiss' needs faiss-cpu: pip install 'xlm_jax[mining]'")
    if backend not in ("auto", "faiss", "numpy"):
        raise UserError(f"backend={backend!r}: use 'auto', 'faiss' or 'numpy'")
    if faiss is not None:
        index = faiss.IndexFlatIP(y.shape[1])
        index.add(np.ascontiguousarray(y))
        sims, ids = index.search(np.ascontiguousarray(x), k)
        return sims.astype(np.float32), ids.astype(np.int64)
    # Per similarity: 4 bytes in the block, 4 in argpartition's working copy, 8 in its int64 indices, and
    # slack for NumPy's temporaries (peak measured under `block_bytes` for 20k x 20k, see docs/finetune.md).
    rows = max(1, int(block_bytes) // (24 * len(y)))
    sims = np.empty((len(x), k), np.float32)
    ids = np.empty((len(x), k), np.int64)
    for start in range(0, len(x), rows):
        block = x[start:start + rows] @ y.T  # [rows, M]: the only large array
        top = (np.argpartition(block, len(y) - k, axis=1)[:, len(y) - k:] if k < len(y)
               else np.tile(np.arange(len(y)), (len(block), 1)))
        top_sims = np.take_along_axis(block, top, axis=1)
        order = np.argsort(-top_sims, axis=1, kind="stable")
        sims[start:start + rows] = np.take_along_axis(top_sims, order, axis=1)
        ids[start:start + rows] = np.take_along_axis(top, order, axis=1)
    return sims, ids


# -------------------------------------------------------------------------------------------- Tatoeba


def tatoeba_accuracy(xx: np.ndarray, en: np.ndarray, backend: str = "auto") -> dict:
    """Row i of `xx` translates row i of `en` ([N, D] each). XTREME's Tatoeba score is "accuracy" (xx → en
    nearest neighbour by cosine is the aligned row); "en_to_xx_accuracy" the other way."""
    if len(xx) != len(en):
        raise UserError(f"{len(xx)} and {len(en)} embeddings: Tatoeba sides must be line-aligned")
    gold = np.arange(len(xx))
    fwd = knn(xx, en, 1, backend=backend)[1][:, 0]
    bwd = knn(en, xx, 1, backend=backend)[1][:, 0]
    return {"accuracy": float(np.mean(fwd == gold)), "en_to_xx_accuracy": float(np.mean(bwd == gold)), "n": len(xx)}


def tatoeba_code(lang: str) -> str:
    return TATOEBA_CODES.get(lang, lang)


def tatoeba_files(data_dir: str | Path, lang: str) -> tuple[Path, Path]:
    """(xx file, English file) of `lang`: the code as given when its files exist (`tatoeba.de-eng.de`), else its
    ISO 639-3 code from TATOEBA_CODES (`de` -> `tatoeba.deu-eng.deu`, the released names)."""
    for code in dict.fromkeys((lang, tatoeba_code(lang))):
        base = Path(data_dir) / f"tatoeba.{code}-eng"
        if Path(f"{base}.{code}").is_file() or code == tatoeba_code(lang):
            return Path(f"{base}.{code}"), Path(f"{base}.eng")
    raise AssertionError("unreachable")


def tatoeba_langs(data_dir: str | Path) -> list[str]:
    """The xxx codes of every `tatoeba.{xxx}-eng.{xxx}` in data_dir."""
    found = (re.fullmatch(r"tatoeba\.([^.]+)-eng\.\1", p.name) for p in Path(data_dir).iterdir())
    return sorted(m.group(1) for m in found if m)


def read_lines(path: Path, what: str) -> list[str]:
    """Lines of a UTF-8 file (UserError naming the file when missing / not text)."""
    with open_text(path, what) as f:
        return [line.rstrip("\r\n") for line in f]


def read_tatoeba(data_dir: str | Path, lang: str) -> tuple[list[str], list[str]]:
    """(xx sentences, English sentences) of one language. UserError naming the file for a missing, non-UTF-8
    or empty file, and naming both files and their counts when they are not line-aligned."""
    xx_path, en_path = tatoeba_files(data_dir, lang)
    for path in (xx_path, en_path):
        if not path.is_file():
            found = tatoeba_langs(data_dir) if Path(data_dir).is_dir() else []
            raise UserError(f"{path}: no such Tatoeba file (language {lang!r}; "
                            + (f"{data_dir} has {', '.join(found)})" if found else f"{data_dir} has no tatoeba.*-eng.* files)"))
    xx, en = read_lines(xx_path, "Tatoeba file"), read_lines(en_path, "Tatoeba file")
    for path, lines in ((xx_path, xx), (en_path, en)):
        if not lines:
            raise UserError(f"{path}: empty; a Tatoeba file has one sentence per line")
    if len(xx) != len(en):
        raise UserError(f"{xx_path} has {len(xx)} lines but {en_path} has {len(en)}: Tatoeba files must be line-aligned")
    return xx, en


# ----------------------------------------------------------------------------------------------- BUCC


@dataclasses.dataclass(frozen=True)
class BuccSplit:
    """One split of one language pair: ids and sentences of both sides, gold (xx id, en id) pairs."""

    lang: str
    split: str
    xx_ids: list[str]
    xx_sentences: list[str]
    en_ids: list[str]
    en_sentences: list[str]
    gold: frozenset[tuple[str, str]]


def bucc_files(data_dir: str | Path, lang: str, split: str) -> dict[str, Path]:
    """{"xx", "en", "gold"} paths; files may also sit in data_dir/{xx}-en/ (the released archive's layout)."""
    base = Path(data_dir)
    if not (base / f"{lang}-en.{split}.gold").exists() and (base / f"{lang}-en").is_dir():
        base = base / f"{lang}-en"
    stem = base / f"{lang}-en.{split}"
    return {"xx": Path(f"{stem}.{lang}"), "en": Path(f"{stem}.en"), "gold": Path(f"{stem}.gold")}


def bucc_langs(data_dir: str | Path, split: str) -> list[str]:
    """The xx of every `{xx}-en.{split}.gold` in data_dir (or data_dir/{xx}-en/)."""
    root = Path(data_dir)
    paths = [*root.glob(f"*-en.{split}.gold"), *root.glob(f"*-en/*-en.{split}.gold")]
    return sorted({p.name.split("-en.")[0] for p in paths})


def _id_lines(path: Path) -> tuple[list[str], list[str]]:
    """`id<TAB>sentence` lines -> (ids, sentences). UserError naming file and line for a line without a tab
    or with an empty id, a duplicate id (both lines), and an empty file."""
    ids, sentences, first_line = [], [], {}
    for n, line in enumerate(read_lines(path, "BUCC file"), start=1):
        if not line.strip():
            continue
        sid, tab, sentence = line.partition("\t")
        if not tab or not sid.strip():
            raise UserError(f"{path}:{n}: expected 'id<TAB>sentence', got {line[:60]!r}")
        sid = sid.strip()
        if sid in first_line:
            raise UserError(f"{path}:{n}: duplicate id {sid!r} (first on line {first_line[sid]})")
        first_line[sid] = n
        ids.append(sid)
        sentences.append(sentence)
    if not ids:
        raise UserError(f"{path}: empty; a BUCC sentence file has one 'id<TAB>sentence' per line")
    return ids, sentences


def read_bucc(data_dir: str | Path, lang: str, split: str) -> BuccSplit:
    """One BUCC split, checked: every file present and UTF-8, sentence files non-empty with unique ids, the gold
    file non-empty with two tab-separated ids per line, each found in its sentence file (UserError naming the
    file, line and id)."""
    files = bucc_files(data_dir, lang, split)
    for key, path in files.items():
        if not path.is_file():
            found = bucc_langs(data_dir, split) if Path(data_dir).is_dir() else []
            hint = "; BUCC 2018's released gold splits are sample and training (XTREME tests on training)"
            raise UserError(f"{path}: no such BUCC file (language {lang!r}, split {split!r}"
                            + (f"; {data_dir} has {split} gold files for {', '.join(found)})" if found else ")") + hint)
    xx_ids, xx_sentences = _id_lines(files["xx"])
    en_ids, en_sentences = _id_lines(files["en"])
    known = {"xx": set(xx_ids), "en": set(en_ids)}
    gold = set()
    for n, line in enumerate(read_lines(files["gold"], "BUCC gold file"), start=1):
        if not line.strip():
            continue
        cells = [c.strip() for c in line.split("\t")]
        if len(cells) != 2 or not all(cells):
            raise UserError(f"{files['gold']}:{n}: expected 'id_{lang}<TAB>id_en', got {line[:60]!r}")
        for side, sid in zip(("xx", "en"), cells):
            if sid not in known[side]:
                raise UserError(f"{files['gold']}:{n}: id {sid!r} is not in {files[side]}")
        gold.add((cells[0], cells[1]))
    if not gold:
        raise UserError(f"{files['gold']}: empty; a BUCC gold file has one 'id_{lang}<TAB>id_en' per line")
    return BuccSplit(lang, split, xx_ids, xx_sentences, en_ids, en_sentences, frozenset(gold))


def margin_candidates(x: np.ndarray, y: np.ndarray, k: int = 4, *, backend: str = "auto",
                      block_bytes: int = DEFAULT_BLOCK_BYTES) -> list[tuple[int, int, float]]:
    """Mined pairs (row of x, row of y, ratio-margin score), best first, each row used at most once.

    x: [N, D], y: [M, D] embeddings. Forward candidates: each x's best-margin neighbour among its k nearest y;
    backward: each y's among its k nearest x (LASER `mine_bitexts.py`, `--mode mine --retrieval max --margin
    ratio`). Margin denominators are clamped at 1e-6 so that orthogonal or zero embeddings give finite scores."""
    x2y_sim, x2y_ind = knn(x, y, k, backend=backend, block_bytes=block_bytes)
    y2x_sim, y2x_ind = knn(y, x, k, backend=backend, block_bytes=block_bytes)
    x_mean, y_mean = x2y_sim.mean(axis=1), y2x_sim.mean(axis=1)

    def best(sims, ind, own_mean, other_mean):
        scores = sims / np.maximum((own_mean[:, None] + other_mean[ind]) / 2, MIN_DENOMINATOR)
        j = scores.argmax(axis=1)
        rows = np.arange(len(sims))
        return ind[rows, j], scores[rows, j]

    fwd_best, fwd_score = best(x2y_sim, x2y_ind, x_mean, y_mean)
    bwd_best, bwd_score = best(y2x_sim, y2x_ind, y_mean, x_mean)
    src = np.concatenate([np.arange(len(x)), bwd_best])
    trg = np.concatenate([fwd_best, np.arange(len(y))])
    scores = np.concatenate([fwd_score, bwd_score])
    seen_src, seen_trg, out = set(), set(), []
    for i in np.argsort(-scores, kind="stable"):
        s, t = int(src[i]), int(trg[i])
        if s not in seen_src and t not in seen_trg:
            seen_src.add(s)
            seen_trg.add(t)
            out.append((s, t, float(scores[i])))
    return out


def best_threshold(candidates: Sequence[tuple[str, str, float]], gold: Iterable[tuple[str, str]]) -> dict:
    """The score threshold maximising F1 of `candidates` (id pairs with scores) against `gold` (XTREME's /
    LASER's `bucc_optimize`): {"threshold", "precision", "recall", "f1"} on these candidates. Keeping a
    candidate means score >= threshold; the threshold is the midpoint between the last kept and the next score
    (the last kept score when it is the lowest). F1 0 (threshold +inf: keep nothing) when no candidate is gold."""
    gold = set(gold)
    ranked = sorted(candidates, key=lambda c: -c[2])
    best = {"threshold": float("inf"), "precision": 0.0, "recall": 0.0, "f1": 0.0}
    correct = 0
    for i, (a, b, score) in enumerate(ranked):
        correct += (a, b) in gold
        if correct:
            p, r = correct / (i + 1), correct / len(gold)
            f1 = 2 * p * r / (p + r)
            if f1 > best["f1"]:
                nxt = ranked[i + 1][2] if i + 1 < len(ranked) else score
                best = {"threshold": float((score + nxt) / 2), "precision": p, "recall": r, "f1": f1}
    return best


def prf(candidates: Sequence[tuple[str, str, float]], gold: Iterable[tuple[str, str]], threshold: float) -> dict:
    """Precision / recall / F1 of the candidates scoring >= threshold against gold (0 where undefined)."""
    gold = set(gold)
    kept = [(a, b) for a, b, s in candidates if s >= threshold]
    correct = sum(pair in gold for pair in kept)
    p = correct / len(kept) if kept else 0.0
    r = correct / len(gold) if gold else 0.0
    f1 = 2 * p * r / (p + r) if p + r else 0.0
    return {"precision": p, "recall": r, "f1": f1, "mined": len(kept), "correct": correct, "gold": len(gold)}


def mine_split(split: BuccSplit, xx: np.ndarray, en: np.ndarray, k: int = 4, backend: str = "auto",
               block_bytes: int = DEFAULT_BLOCK_BYTES) -> list[tuple[str, str, float]]:
    """Mined (xx id, en id, score) of one split from its embeddings (rows in file order)."""
    pairs = margin_candidates(xx, en, k, backend=backend, block_bytes=block_bytes)
    return [(split.xx_ids[i], split.en_ids[j], s) for i, j, s in pairs]


def bucc_scores(tune: tuple[BuccSplit, list], test: tuple[BuccSplit, list]) -> dict:
    """Threshold from the tuning split's candidates, applied to the test split's: {"threshold", "tune": {…},
    "precision", "recall", "f1", "mined", "correct", "gold", "candidate_recall"} (the test figures at top
    level; candidate_recall: the recall of all candidates, without a threshold; threshold None when no tuning
    candidate was gold: nothing is kept on test, F1 0)."""
    (tune_split, tune_cands), (test_split, test_cands) = tune, test
    best = best_threshold(tune_cands, tune_split.gold)
    scores = prf(test_cands, test_split.gold, best["threshold"])
    # JSON has no infinity: no threshold (nothing gold among the tuning candidates) is null.
    threshold = best["threshold"] if np.isfinite(best["threshold"]) else None
    # Recall with no threshold: how many gold pairs the candidates hold at all (the ranking's ceiling).
    ceiling = prf(test_cands, test_split.gold, -np.inf)["recall"]
    return {"threshold": threshold, "tune": {**best, "threshold": threshold, "split": tune_split.split}, **scores,
            "candidate_recall": ceiling, "split": test_split.split}
