"""Pretraining's data: the preprocessed directory the run reads (`prepare_data`: `data.dir`, or the gettext demo
corpus / a raw corpus built, tokenized and preprocessed into the cache on first use), and what the run derives
from it: the batch recipe (`make_data_config`), the model configuration (`make_model_config`), the held-out
languages (`eval_languages`) and the names of each objective's groups (`group_names`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from pathlib import Path

from xlm_jax.core.errors import UserError
from xlm_jax.data.batches import DataConfig
from xlm_jax.data.corpus import PreprocessedCorpus
from xlm_jax.data.gettext import build_gettext_corpus
from xlm_jax.data.preprocess import preprocess_corpus
from xlm_jax.data.tokenizer import file_sha256, train_tokenizer
from xlm_jax.models.config import ModelConfig
from xlm_jax.pretrain.config import TrainConfig, check_positions


def cache_root(cfg: TrainConfig) -> Path:
    return Path(cfg.data.cache_dir or os.environ.get("XLM_JAX_CACHE") or Path.home() / ".cache" / "xlm_jax")


def prepare_data(cfg: TrainConfig, log, force: bool = False, tokenizer: Path | None = None) -> Path:
    """The preprocessed directory: `data.dir`, or `data.corpus` built / tokenized / preprocessed into the cache
    (each stage skipped when its output is already there, so a second run starts training at once). A cache
    location holding files the stage did not write is a UserError unless `force` (`xlm_jax.core.outputs`).
    `tokenizer`: a SentencePiece model to use instead of training one (`xlm_jax.pretrain.adapt.prepare`)."""
    d = cfg.data
    if d.dir:
        return Path(d.dir)
    cache = cache_root(cfg)
    if d.corpus == "gettext":
        corpus = cache / "gettext"
        if not (corpus / "stats.json").is_file():
            log(f"building the gettext corpus from the system's translation catalogs -> {corpus} (once)")
            t0 = time.perf_counter()
            build_gettext_corpus(corpus, force=force)
            log(f"  done in {time.perf_counter() - t0:.0f} s")
        stats = json.loads((corpus / "stats.json").read_text())["languages"]
        by_pairs = sorted(stats, key=lambda lang: (-stats[lang]["pairs"], lang))
        langs = sorted(by_pairs[: d.max_langs] if d.max_langs else by_pairs) + ["en"]
        tag = f"gettext-{len(langs)}l"
    else:
        corpus = Path(d.corpus)
        if not corpus.is_dir():
            raise UserError(f"data.corpus={d.corpus!r}: not a directory (give a raw corpus, 'gettext', or data.dir)")
        langs = None
        tag = f"{corpus.name}-{hashlib.sha256(str(corpus.resolve()).encode()).hexdigest()[:8]}"
    if tokenizer is not None:  # a given SentencePiece model (data.tokenizer, or the init checkpoint's own)
        tag += f"-tok{file_sha256(tokenizer)[:12]}"
    else:
        tag += f"-v{d.vocab_size}"
        tokenizer = cache / "tokenizers" / f"{tag}.model"
    if not tokenizer.is_file():
        inputs = [str(corpus / "mono" / f"{lang}.txt") for lang in langs] if langs else [str(corpus)]
        log(f"training a {d.vocab_size}-piece SentencePiece model on {d.tokenizer_sentences} sentences -> {tokenizer}")
        t0 = time.perf_counter()
        train_tokenizer(inputs, d.vocab_size, str(tokenizer), max_sentences=d.tokenizer_sentences, seed=0,
                        force=force)
        log(f"  done in {time.perf_counter() - t0:.0f} s")
    out = cache / "preprocessed" / f"{tag}-len{d.max_len}"
    t0 = time.perf_counter()
    manifest = preprocess_corpus(corpus, tokenizer, out, max_len=d.max_len, valid_fraction=d.valid_fraction,
                                 langs=langs, log=lambda msg: None, force=force)
    if time.perf_counter() - t0 > 1:
        log(f"preprocessed {len(manifest['langs'])} languages -> {out} in {time.perf_counter() - t0:.0f} s")
    return out


def make_data_config(cfg: TrainConfig, corpus: PreprocessedCorpus) -> DataConfig:
    d = cfg.data
    recipe = {f.name: getattr(d, f.name) for f in dataclasses.fields(DataConfig) if hasattr(d, f.name)
              and f.name not in ("mono_langs", "para_pairs", "objectives")}
    objectives = {k: float(v) for k, v in d.objectives.items()}
    stream = any(objectives.get(o, 0) > 0 for o in ("mlm", "clm"))
    mono = tuple(d.mono_langs) or (tuple(corpus.mono_langs("train")) if stream else ())
    pairs = tuple(d.para_pairs) or tuple("-".join(p) for p in corpus.para_pairs("train"))
    # Named here, where the data directory and the config keys are known (DataConfig's own check knows neither).
    for objective, found, what, key in (("tlm", pairs, "parallel pairs (train/para/)", "data.para_pairs"),
                                        ("mlm", mono, "monolingual text (train/mono/)", "data.mono_langs"),
                                        ("clm", mono, "monolingual text (train/mono/)", "data.mono_langs")):
        if objectives.get(objective, 0) > 0 and not found:
            raise UserError(f"data.objectives.{objective}={objectives[objective]:g}: the {objective.upper()} objective "
                            f"is enabled, but the data directory {corpus.dir} has no {what} and {key} is not set; "
                            f"turn it off with data.objectives.{objective}=0, or use data that has them")
    return DataConfig(
        **recipe, seq_len=cfg.train.seq_len, batch_size=cfg.train.batch_size, objectives=objectives,
        mono_langs=mono, para_pairs=pairs if objectives.get("tlm", 0) > 0 else (), seed=cfg.seed,
    )


def make_model_config(cfg: TrainConfig, corpus: PreprocessedCorpus, data_cfg: DataConfig) -> ModelConfig:
    """The base model with the data's vocabulary, special ids and language list (the user's model.* win)."""
    tok = corpus.manifest["tokenizer"]
    model_cfg = cfg.model.resolve(
        vocab_size=int(tok["vocab_size"]), bos_token_id=int(tok["bos_id"]), pad_token_id=int(tok["pad_id"]),
        eos_token_id=int(tok["eos_id"]), unk_token_id=int(tok["unk_id"]), mask_token_id=int(tok["mask_id"]),
        langs=tuple(data_cfg.langs), n_langs=len(data_cfg.langs),
    )
    if model_cfg.vocab_size < int(tok["vocab_size"]):
        raise UserError(f"model.vocab_size={model_cfg.vocab_size} is smaller than the data's vocabulary "
                        f"({tok['vocab_size']} ids, {corpus.dir}/manifest.json)")
    check_positions(max(data_cfg.seq_len, data_cfg.pair_len if "tlm" in data_cfg.enabled else 0), model_cfg)
    return model_cfg


def eval_languages(cfg: TrainConfig, corpus: PreprocessedCorpus, data_cfg: DataConfig) -> list[str]:
    """The languages of the held-out MLM evaluation: train.eval_langs, each checked against the data now (not
    at the first validation), or by default every MLM language with a valid split."""
    try:
        have = corpus.mono_langs("valid")
    except UserError:
        have = []
    if not cfg.train.eval_langs:
        return [lang for lang in have if lang in data_cfg.mono_langs] if "mlm" in data_cfg.enabled else []
    usable = [lang for lang in have if lang in data_cfg.langs]
    for lang in cfg.train.eval_langs:
        if lang not in usable:
            raise UserError(f"train.eval_langs: {lang!r} has no held-out (valid) text among the run's languages in "
                            f"{corpus.dir}; valid: {', '.join(usable) or 'none (set train.eval_langs=[])'}")
    return list(cfg.train.eval_langs)


def group_names(data_cfg: DataConfig) -> dict[str, list[str]]:
    """Names of the groups of each objective's `example_lang` (languages, or pairs for TLM)."""
    return {o: (["-".join(p) for p in data_cfg.para_pairs] if o == "tlm" else list(data_cfg.mono_langs))
            for o in data_cfg.enabled}
