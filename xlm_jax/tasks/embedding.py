"""The contrastive fine-tuning task (`task=contrastive`): a sentence-embedding model trained on (anchor, positive)
pairs with optional hard negatives, the in-batch-negatives loss of `xlm_jax.tasks.contrastive` (InfoNCE / MNRL,
temperature, symmetric, Matryoshka, GradCache), and retrieval scored per language on held-out pairs.

Data (`train=` / `valid=` / `test=` items; `LANG:` prefixes as for the other tasks):
- JSONL, one pair per line: `{"anchor": "...", "positive": "...", "negatives": ["...", ...], "lang": "de"}`;
  `negatives` (a list of texts, or one text) and `lang` are optional. sentence-transformers' / FlagEmbedding's
  names are read too: `query` for anchor, `pos` for positive (a text or a list of exactly one), `neg` for
  negatives.
- TSV with a header line naming the columns: `anchor` (or `query`), `positive` (or `pos`), optional `lang`, and
  any number of hard-negative columns whose names start with `neg` (`negative`, `neg_1`, ...), in that order.
- A parallel corpus: `para:DIR/L1-L2` reads the line-aligned files `DIR/L1-L2.L1` and `DIR/L1-L2.L2` (the layout
  of `xlm_jax.data.corpus` / `xlm_jax.data.gettext`): the non-English side is the anchor, its English translation
  the positive (LaBSE's translation ranking; `contrastive.symmetric=true` trains both directions), the language
  the non-English code (`L1-L2` when neither is English).
- The default data: `gettext:XX` is `para:` on the gettext corpus of this machine's translation catalogs
  (en <-> XX; built into $XLM_JAX_CACHE or ~/.cache/xlm_jax/gettext on first use, as pretraining builds it).
A `:train`, `:valid` or `:test` suffix on a `para:` / `gettext:` item keeps one split: each pair goes to the split
of a hash of its English side (1 % valid, 1 % test, the rest train), so one English sentence is in one split for
every language.

Every training pair needs the same number of hard negatives (they are extra columns of the batch, as in
sentence-transformers). The loss sees the whole (global) batch: every anchor against every positive and every hard
negative of the batch, across the data-parallel devices. Texts are cut to max_len tokens; `query_prefix` is
prepended to anchors, `passage_prefix` to positives and negatives (multilingual-e5's "query: " / "passage: ").

Validation / test: per language, each anchor ranks the positives (and hard negatives) of that language's pairs;
the score is P@1 (the own positive first), with nDCG@10 (trec_eval's, `xlm_jax.tasks.retrieval_metrics`).
The output loads with `xlm_jax.load(OUT)`, whose `embed` uses the trained pooling, normalisation, max_len and
prefixes (as prompts "query" / "passage"), and converts with `python -m xlm_jax.convert OUT DST --to
sentence-transformers`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from xlm_jax.core.errors import UserError
from xlm_jax.core.textfiles import open_text
from xlm_jax.data.tokenizer import pad_rows
from xlm_jax.models import families
from xlm_jax.models.sentence_transformers import SentenceEmbeddingConfig
from xlm_jax.tasks.base import Report, Task, _cells, _check_fields, _dir_lang, _jsonl, lang_order, pad_width, padded_rows
from xlm_jax.tasks.contrastive import ContrastiveConfig, contrastive_loss, grad_cache_step, in_batch_accuracy, pool
from xlm_jax.tasks.retrieval_metrics import evaluate_scores
from xlm_jax.training.step import StepLoss

NAME = "contrastive"
SPLITS = ("train", "valid", "test")
HELD_OUT = {"valid": 0, "test": 1}  # hash bucket (of 100) of each held-out split; the other 98 are train
ANCHOR_KEYS, POSITIVE_KEYS, NEGATIVE_KEYS = ("anchor", "query"), ("positive", "pos"), ("negatives", "neg")


# ------------------------------------------------------------------------------------------------ model


class SentenceEmbedder(nn.Module):
    """The family's encoder + pooling (`xlm_jax.tasks.contrastive.pool`): [B, T] ids -> float32 [B, D] sentence
    embeddings (unit length when `normalize`). Params: {"encoder": ...}, the masked LM's own (its LM head is
    neither used nor created), so any checkpoint's encoder loads and the output converts as a bare encoder.
    Same call as the task models (`segment_ids` / `example_starts` accepted for a uniform call; not packed)."""

    config: Any
    pooling: str = "mean"
    normalize: bool = False

    def setup(self):
        self.lm = families.masked_lm(self.config)
        nn.share_scope(self, self.lm)  # the LM's "encoder" params sit at this module's top level

    def __call__(self, input_ids, attention_mask=None, positions=None, langs=None, *, deterministic=True,
                 segment_ids=None, example_starts=None):
        if attention_mask is None:
            attention_mask = (input_ids != self.config.pad_token_id).astype(jnp.int32)
        hidden = self.lm(input_ids, attention_mask, positions, langs, deterministic=deterministic)
        return pool(hidden, attention_mask, self.pooling, normalize=self.normalize)


# ------------------------------------------------------------------------------------------------ data


@dataclasses.dataclass(frozen=True)
class PairExample:
    """One training / evaluation pair: texts, the language it is scored under (`lang`), each side's language (the
    lang id an XLM model with language embeddings gets) and where it was read (`file:line`)."""

    anchor: str
    positive: str
    negatives: tuple[str, ...]
    lang: str
    anchor_lang: str
    positive_lang: str
    where: str


def cache_root() -> Path:
    """Where the default corpus lives: $XLM_JAX_CACHE or ~/.cache/xlm_jax (pretraining's cache)."""
    return Path(os.environ.get("XLM_JAX_CACHE") or Path.home() / ".cache" / "xlm_jax")


def _split_of(english: str) -> str:
    bucket = int(hashlib.sha1(english.encode("utf-8")).hexdigest()[:8], 16) % 100
    return next((split for split, b in HELD_OUT.items() if b == bucket), "train")


def _parse_corpus_spec(spec: str) -> tuple[str, str, str | None]:
    """"gettext:de:valid" -> ("gettext", "de", "valid"); "para:DIR/de-en" -> ("para", "DIR/de-en", None)."""
    kind, rest = spec.split(":", 1)
    split = None
    head, sep, tail = rest.rpartition(":")
    if sep and tail in SPLITS:
        rest, split = head, tail
    elif sep and kind == "gettext":
        raise UserError(f"{spec}: the split after the language must be one of {', '.join(SPLITS)}")
    if not rest:
        raise UserError(f"{spec}: give {'a language code (gettext:de)' if kind == 'gettext' else 'DIR/L1-L2'}")
    return kind, rest, split


def _gettext_prefix(lang: str, spec: str) -> Path:
    from xlm_jax.data.gettext import build_gettext_corpus, para_name  # the corpus builder runs once, if needed

    corpus = cache_root() / "gettext"
    if not (corpus / "stats.json").is_file():
        build_gettext_corpus(corpus)
    if lang == "en" or not re.fullmatch(r"[a-z]{2,3}(?:_[A-Za-z]+)?", lang):
        raise UserError(f"{spec}: {lang!r} is not a language code of the gettext corpus (en <-> XX pairs)")
    stem, _, _ = para_name(lang, "en")
    prefix = corpus / "para" / stem
    if not (prefix.parent / f"{stem}.{lang}").is_file():
        have = sorted(json.loads((corpus / "stats.json").read_text()).get("languages", {}))
        raise UserError(f"{spec}: the gettext corpus {corpus} has no en-{lang} pairs (languages: {', '.join(have)})")
    return prefix


def read_parallel(spec: str, lang: str | None = None) -> list[PairExample]:
    """The pairs of a `para:DIR/L1-L2[:split]` or `gettext:XX[:split]` item (module docstring). Raises UserError
    naming the file and line for a missing file, files of different lengths or an empty line."""
    kind, rest, split = _parse_corpus_spec(spec)
    prefix = _gettext_prefix(rest, spec) if kind == "gettext" else Path(rest)
    match = re.fullmatch(r"([^-]+)-([^-]+)", prefix.name)
    if not match:
        raise UserError(f"{spec}: name the pair files' common prefix DIR/L1-L2 (e.g. para:corpus/para/de-en for "
                        "de-en.de and de-en.en)")
    l1, l2 = match.groups()
    paths = [prefix.parent / f"{prefix.name}.{x}" for x in (l1, l2)]
    sides = []
    for path in paths:
        with open_text(path, "parallel corpus file") as f:
            sides.append([line.rstrip("\r\n") for line in f])
    if len(sides[0]) != len(sides[1]):
        raise UserError(f"{paths[0]} has {len(sides[0])} lines but {paths[1]} has {len(sides[1])}: line-aligned "
                        "translation files must have as many lines")
    a, p = (1, 0) if l1 == "en" else (0, 1)  # anchor: the non-English side; positive: the English one
    langs = (l1, l2)
    pair_lang = lang or (langs[a] if "en" in langs else f"{l1}-{l2}")
    out = []
    for n, texts in enumerate(zip(*sides), start=1):
        for side in (a, p):
            if not texts[side].strip():
                raise UserError(f"{paths[side]}:{n}: empty line (a pair needs a text on both sides)")
        if split is not None and _split_of(texts[p]) != split:
            continue
        out.append(PairExample(texts[a], texts[p], (), pair_lang, langs[a], langs[p], f"{paths[a]}:{n}"))
    if not out:
        raise UserError(f"{spec}: no pairs{f' in the {split} split' if split else ''}")
    return out


def _text(path: Path, n: int, field: str, value) -> str:
    if not isinstance(value, str):
        raise UserError(f"{path}:{n}: field {field!r} is {json.dumps(value)[:40]}, expected a string")
    if not value.strip():
        raise UserError(f"{path}:{n}: field {field!r} is an empty text")
    return value


def _field(record: dict, names: tuple[str, ...]):
    return next(((name, record[name]) for name in names if name in record), (names[0], None))


def _read_jsonl(path: Path, lang: str | None) -> list[PairExample]:
    out = []
    default = lang or _dir_lang(path) or "en"
    for n, record in _jsonl(path):
        (a_key, anchor), (p_key, positive) = _field(record, ANCHOR_KEYS), _field(record, POSITIVE_KEYS)
        for key, value, names in ((a_key, anchor, ANCHOR_KEYS), (p_key, positive, POSITIVE_KEYS)):
            if value is None:
                raise UserError(f"{path}:{n}: no {names[0]!r} field (a pair needs \"anchor\" and \"positive\", or "
                                f"\"query\" and \"pos\"; found {', '.join(map(repr, record)) or 'no fields'})")
        if isinstance(positive, list):
            if len(positive) != 1:
                raise UserError(f"{path}:{n}: field {p_key!r} lists {len(positive)} texts: give exactly one "
                                "positive per line (one line per pair)")
            positive = positive[0]
        n_key, negatives = _field(record, NEGATIVE_KEYS)
        negatives = [] if negatives is None else [negatives] if isinstance(negatives, str) else negatives
        if not isinstance(negatives, list):
            raise UserError(f"{path}:{n}: field {n_key!r} is {json.dumps(negatives)[:40]}, expected a list of texts")
        row_lang = record.get("lang", default)
        row_lang = _text(path, n, "lang", row_lang).strip()
        out.append(PairExample(_text(path, n, a_key, anchor), _text(path, n, p_key, positive),
                               tuple(_text(path, n, f"{n_key}[{i}]", x) for i, x in enumerate(negatives)),
                               row_lang, row_lang, row_lang, f"{path}:{n}"))
    return out


def _read_tsv(path: Path, lang: str | None) -> list[PairExample]:
    default = lang or _dir_lang(path) or "en"
    with open_text(path, "data file", newline="") as f:
        header_line = f.readline()
        header = _cells(header_line)
        col = {name: header.index(name) for name in header if name in (*ANCHOR_KEYS, *POSITIVE_KEYS, "lang")}
        a = next((col[k] for k in ANCHOR_KEYS if k in col), None)
        p = next((col[k] for k in POSITIVE_KEYS if k in col), None)
        if a is None or p is None:
            raise UserError(f"{path}:1: the header {header_line.strip()[:80]!r} must name an 'anchor' (or 'query') "
                            "and a 'positive' (or 'pos') column; hard negatives in columns named neg...")
        negs = [i for i, name in enumerate(header) if name.startswith("neg")]
        out = []
        for n, line in enumerate(f, start=2):
            if not line.strip():
                continue
            cells = _cells(line)
            _check_fields(path, n, len(cells), len(header))
            row_lang = _text(path, n, "lang", cells[col["lang"]]).strip() if "lang" in col else default
            out.append(PairExample(_text(path, n, header[a], cells[a]), _text(path, n, header[p], cells[p]),
                                   tuple(_text(path, n, header[i], cells[i]) for i in negs), row_lang, row_lang,
                                   row_lang, f"{path}:{n}"))
    return out


def read(path: Path, lang: str | None = None, purpose: str = "training") -> list[PairExample]:
    """The pairs of one data item (module docstring: JSONL, TSV, `para:` or `gettext:`). Raises UserError naming
    the file and line for a missing anchor or positive, an empty text, a field that is not text, or a file with
    no pair."""
    spec = str(path)
    if spec.startswith(("para:", "gettext:")):
        return read_parallel(spec, lang)
    if path.suffix in (".jsonl", ".json"):
        out = _read_jsonl(path, lang)
    elif path.suffix in (".tsv", ".txt", ".csv"):
        out = _read_tsv(path, lang)
    else:
        with open_text(path, "data file") as f:
            first = next((line for line in f if line.strip()), "")
        out = _read_jsonl(path, lang) if first.lstrip().startswith("{") else _read_tsv(path, lang)
    if not out:
        raise UserError(f"{path}: no pairs in this {NAME} file (empty, or only a header)")
    return out


# ------------------------------------------------------------------------------------------------ features


@dataclasses.dataclass
class PairFeatures:
    """Training rows: per pair the anchor, positive and hard-negative token ids (framed, unpadded) and lang ids."""

    anchor: list[list[int]]
    positive: list[list[int]]
    negatives: list[list[list[int]]]
    anchor_langs: list[int]
    positive_langs: list[int]
    truncated: int
    n_negatives: int

    @property
    def ids(self) -> list[list[int]]:
        return self.anchor

    def __len__(self) -> int:
        return len(self.anchor)


@dataclasses.dataclass
class TextFeatures:
    """Evaluation rows: one text each (the anchors, then the positives, then the hard negatives of every pair);
    `owner[r]` the pair of row r and `role[r]` 0 anchor, 1 positive, 2 negative."""

    ids: list[list[int]]
    lang_ids: list[int]
    owner: list[int]
    role: list[int]
    truncated: int

    def __len__(self) -> int:
        return len(self.ids)


def _encode(tokenizer, texts: Sequence[str], max_len: int) -> tuple[list[list[int]], int]:
    """Framed ids of each text cut to max_len, as `LoadedModel.embed` encodes them (`batch_encode`)."""
    out, cut = [], 0
    for start in range(0, len(texts), 4096):
        batch = tokenizer.batch_encode(list(texts[start:start + 4096]), max_len)
        out += [r[: int(m.sum())].tolist() for r, m in zip(batch["input_ids"], batch["attention_mask"])]
        cut += int(batch["num_truncated"])
    return out, cut


def features(examples: Sequence[PairExample], tokenizer, protocol, labels, max_len: int, options: dict,
             train: bool = False):
    """Training: `PairFeatures` (UserError naming both pairs when two have different numbers of hard negatives);
    evaluation: `TextFeatures`. Anchors get options["query_prefix"], the others options["passage_prefix"]."""
    qp, pp = options.get("query_prefix", ""), options.get("passage_prefix", "")
    lang_id = (lambda lang: protocol.lang_id(lang)) if protocol.use_langs else (lambda lang: 0)
    if train:
        counts = {len(e.negatives) for e in examples}
        if len(counts) > 1:
            first = examples[0]
            other = next(e for e in examples if len(e.negatives) != len(first.negatives))
            raise UserError(f"{other.where}: {len(other.negatives)} hard negative(s), but {first.where} has "
                            f"{len(first.negatives)}: every training pair needs the same number (they are extra "
                            "columns of the batch)")
        anchors, cut_a = _encode(tokenizer, [qp + e.anchor for e in examples], max_len)
        positives, cut_p = _encode(tokenizer, [pp + e.positive for e in examples], max_len)
        flat, cut_n = _encode(tokenizer, [pp + x for e in examples for x in e.negatives], max_len)
        k = counts.pop() if counts else 0
        negatives = [flat[i * k:(i + 1) * k] for i in range(len(examples))]
        return PairFeatures(anchors, positives, negatives, [lang_id(e.anchor_lang) for e in examples],
                            [lang_id(e.positive_lang) for e in examples], cut_a + cut_p + cut_n, k)
    texts, langs, owner, role = [], [], [], []
    for i, e in enumerate(examples):
        texts.append(qp + e.anchor), langs.append(lang_id(e.anchor_lang)), owner.append(i), role.append(0)
    for i, e in enumerate(examples):
        texts.append(pp + e.positive), langs.append(lang_id(e.positive_lang)), owner.append(i), role.append(1)
    for i, e in enumerate(examples):
        for x in e.negatives:
            texts.append(pp + x), langs.append(lang_id(e.positive_lang)), owner.append(i), role.append(2)
    ids, cut = _encode(tokenizer, texts, max_len) if texts else ([], 0)
    return TextFeatures(ids, langs, owner, role, cut)


def make_batch(feats, rows: Sequence[int], batch_size: int, max_len: int, pad_id: int) -> dict:
    """Evaluation (`TextFeatures`): `padded_rows`. Training (`PairFeatures`): int32 anchor_ids / anchor_mask /
    anchor_langs, positive_* [B, W] and, with K hard negatives, negative_* [B·K, W] (row i·K + k: pair i's k-th),
    one width W for all (`pad_width` of the longest text); weights float32 [B] (1 for the pairs of `rows`)."""
    if isinstance(feats, TextFeatures):
        return padded_rows(feats.ids, feats.lang_ids, rows, batch_size, max_len, pad_id)
    rows = list(rows)
    k = feats.n_negatives
    columns = {"anchor": ([feats.anchor[r] for r in rows], [feats.anchor_langs[r] for r in rows], 1),
               "positive": ([feats.positive[r] for r in rows], [feats.positive_langs[r] for r in rows], 1)}
    if k:
        columns["negative"] = ([x for r in rows for x in feats.negatives[r]],
                               [feats.positive_langs[r] for r in rows for _ in range(k)], k)
    width = pad_width(max(len(x) for ids, _, _ in columns.values() for x in ids), max_len)
    batch: dict = {}
    for name, (ids, langs, per) in columns.items():
        n_rows = batch_size * per
        batch[f"{name}_ids"], batch[f"{name}_mask"] = pad_rows(ids, width, pad_id, n_rows)
        lang_rows = np.zeros((n_rows, width), np.int32)
        lang_rows[: len(langs)] = np.asarray(langs, np.int32).reshape(-1, 1)
        batch[f"{name}_langs"] = lang_rows
    weights = np.zeros((batch_size,), np.float32)
    weights[: len(rows)] = 1.0
    batch["weights"] = weights
    return batch


# ------------------------------------------------------------------------------------------------ loss


def step_loss(model: SentenceEmbedder, config: ContrastiveConfig) -> StepLoss:
    """The contrastive `StepLoss` of `xlm_jax.training.step.make_step`: `contrastive_loss` on the batch's anchor,
    positive and (optional) negative columns, embedded by `model` with dropout; metrics loss, accuracy (in-batch:
    the own positive is the most similar column) and count. With `config.grad_cache_chunk` > 0 its `grad` is
    GradCache's (`grad_cache_step`, chunks of that many pairs): the same gradient, activations of one chunk."""
    names = ("anchor", "positive", "negative")

    def columns(batch) -> dict:
        return {name: {"input_ids": batch[f"{name}_ids"], "attention_mask": batch[f"{name}_mask"],
                       "langs": batch[f"{name}_langs"]} for name in names if f"{name}_ids" in batch}

    def embed(params, x, rng):
        return model.apply({"params": params}, x["input_ids"], x["attention_mask"], None, x["langs"],
                           deterministic=rng is None, rngs={} if rng is None else {"dropout": rng})

    def loss_and_sums(emb: dict, weights) -> tuple[jax.Array, dict]:
        b = emb["anchor"].shape[0]
        neg = emb.get("negative")
        neg = None if neg is None else neg.reshape(b, -1, neg.shape[-1])
        loss = contrastive_loss(emb["anchor"], emb["positive"], neg, config)
        n = weights.sum()
        acc = in_batch_accuracy(emb["anchor"], emb["positive"], neg)
        return loss, {"loss_sum": loss * n, "correct": acc * n, "count": n}

    def fn(params, batch, rng, count):
        emb = {name: embed(params, x, jax.random.fold_in(rng, i)) for i, (name, x) in enumerate(columns(batch).items())}
        loss, sums = loss_and_sums(emb, batch["weights"])
        return loss * sums["count"] / count, sums

    def totals(batch):
        return jnp.maximum(batch["weights"].sum(), 1.0)

    def metrics(sums):
        count = jnp.maximum(sums["count"], 1.0)
        return {"loss": sums["loss_sum"] / count, "accuracy": sums["correct"] / count, "count": sums["count"]}

    grad = None
    if config.grad_cache_chunk:
        chunk = config.grad_cache_chunk

        def grad(params, batch, rng, count):
            weights = batch["weights"]
            (loss, sums), grads = grad_cache_step(embed, params, columns(batch), chunk,
                                                  lambda emb: loss_and_sums(emb, weights), rng, has_aux=True)
            scale = sums["count"] / count
            return jax.tree.map(lambda g: g * scale, grads), sums

    return StepLoss(fn, totals, metrics, grad=grad)


# ------------------------------------------------------------------------------------------------ scoring


def predictions(examples, feats: TextFeatures, outs: list, labels, options) -> list:
    """-> per pair (anchor vector, positive vector, [hard-negative vectors]) float32 [D] each."""
    out = [[None, None, []] for _ in examples]
    for r, vec in enumerate(outs):
        i, role = feats.owner[r], feats.role[r]
        if role == 2:
            out[i][2].append(np.asarray(vec, np.float32))
        else:
            out[i][role] = np.asarray(vec, np.float32)
    return out


def score(examples, feats, preds: list, labels) -> dict:
    """{lang: {"score": P@1, "p@1", "ndcg@10", "n"}}: each language's anchors rank its positives and hard
    negatives by cosine (`xlm_jax.tasks.retrieval_metrics.evaluate_scores`, one relevant document per query)."""
    results = {}
    for lang in sorted({e.lang for e in examples}):
        idx = [i for i, e in enumerate(examples) if e.lang == lang]
        queries = np.stack([preds[i][0] for i in idx])
        docs = [preds[i][1] for i in idx] + [v for i in idx for v in preds[i][2]]
        doc_ids = [f"p{i}" for i in idx] + [f"n{i}.{j}" for i in idx for j in range(len(preds[i][2]))]
        q = queries / np.maximum(np.linalg.norm(queries, axis=1, keepdims=True), 1e-12)
        d = np.stack(docs)
        d = d / np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-12)
        m = evaluate_scores(q @ d.T, [f"q{i}" for i in idx], doc_ids, {f"q{i}": {f"p{i}": 1} for i in idx},
                            (1, 10))
        results[lang] = {"score": m["precision@1"], "p@1": m["precision@1"], "ndcg@10": m["ndcg@10"], "n": len(idx)}
    return results


def table(results: dict, first_lang: str | None = "en") -> tuple[str, dict]:
    """Markdown (rows "split P@1" and "split nDCG@10", one column per language, average last) and its JSON form."""
    langs = lang_order({lang for per in results.values() for lang in per}, first_lang)
    lines = ["| retrieval | " + " | ".join(langs) + " | avg |", "|---" * (len(langs) + 2) + "|"]
    out: dict = {"metric": "p@1", "langs": langs, "splits": {}}
    for split, per in results.items():
        for key, name in (("p@1", "P@1"), ("ndcg@10", "nDCG@10")):
            vals = [per[lang][key] for lang in langs if lang in per]
            cells = [f"{100 * per[lang][key]:.1f}" if lang in per else "–" for lang in langs]
            lines.append(f"| {split} {name} | " + " | ".join(cells) + f" | {100 * float(np.mean(vals)):.1f} |")
        out["splits"][split] = {"per_lang": {lang: per[lang] for lang in langs if lang in per},
                                "avg": float(np.mean([per[lang]["score"] for lang in langs if lang in per])),
                                "avg_ndcg@10": float(np.mean([per[lang]["ndcg@10"] for lang in langs if lang in per]))}
    return "\n".join(lines), out


# ------------------------------------------------------------------------------------------------ the task


def options(cfg) -> dict:
    """task.json's record of the contrastive settings (`cfg.contrastive`)."""
    c = cfg.contrastive
    return {"pooling": c.pooling, "normalize": c.normalize, "temperature": c.temperature, "symmetric": c.symmetric,
            "matryoshka_dims": list(c.matryoshka_dims), "matryoshka_weights": list(c.matryoshka_weights),
            "query_prefix": c.query_prefix, "passage_prefix": c.passage_prefix,
            "grad_cache_chunk": c.grad_cache_chunk}


def contrastive_config(options: dict) -> ContrastiveConfig:
    known = {f.name for f in dataclasses.fields(ContrastiveConfig)}
    values = {k: (tuple(v) if isinstance(v, list) else v) for k, v in options.items() if k in known}
    return ContrastiveConfig(**values)


def sentence_config(options: dict, max_len: int) -> SentenceEmbeddingConfig:
    """How `xlm_jax.load(...).embed` and `convert --to sentence-transformers` embed with a contrastive fine-tuning
    output: its pooling, normalisation, max_len and prefixes (prompts "query" / "passage")."""
    c = contrastive_config(options)
    prompts = {name: text for name, text in (("query", c.query_prefix), ("passage", c.passage_prefix)) if text}
    return SentenceEmbeddingConfig(pooling=c.pooling, normalize=c.normalize, max_seq_length=max_len, prompts=prompts)


def _describe(feats, labels):
    k = feats.n_negatives
    return "", (f"; in-batch negatives over the global batch" + (f", {k} hard negative(s) per pair" if k else ""))


def _note(feats, split, max_len, options):
    if not feats.truncated:
        return None
    return f"note: {feats.truncated} {'training' if split == 'train' else split} texts did not fit in max_len={max_len} and were truncated"


REPORT = Report(
    note=_note, describe=_describe,
    finetune_record=lambda feats, labels, options: {"truncated": {s: f.truncated for s, f in feats.items()},
                                                    "contrastive": options},
    eval_record=lambda feats, options: {"truncated": feats.truncated},
    history_entry=lambda scores: {"p@1": scores["p@1"], "ndcg@10": scores["ndcg@10"]},
    acc_label="in-batch acc", score_label=" P@1")


def configure(task: Task, opts: dict) -> Task:
    """The task with `opts`' pooling / loss settings bound into its model and loss."""
    cc = contrastive_config(opts)

    def model(config, n_labels):
        cc.check_hidden_size(config.hidden_size)
        return SentenceEmbedder(config, cc.pooling, cc.normalize)

    return dataclasses.replace(task, model=model, loss=lambda m: step_loss(m, cc))


CONTRASTIVE = Task(
    NAME, "embedding", False, ("pair",), "p@1", read=read, head=lambda config, n: None,
    model=lambda config, n: SentenceEmbedder(config), loss=lambda m: step_loss(m, ContrastiveConfig()),
    options=options, features=features, batch=make_batch, logits=True, predictions=predictions, score=score,
    table=table, report=REPORT, text_method=("embed(texts)", "one vector per text (the trained pooling)"),
    noun="pairs", with_options=lambda opts: configure(CONTRASTIVE, opts),
)
