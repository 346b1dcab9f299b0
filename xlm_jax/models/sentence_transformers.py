"""The sentence-transformers directory layout, read and written as JSON (no torch): which pooling, normalisation,
length and prompts turn an XLM-R checkpoint into the embedding model it was trained as.

A sentence-transformers model directory (multilingual-e5, BGE-M3, paraphrase-multilingual-*) holds:

- `modules.json`: the pipeline, a list of {"idx", "name", "path", "type"}: Transformer → Pooling → (Normalize).
  `type` is `sentence_transformers.models.Transformer` / `.Pooling` / `.Normalize` (v2–v5) or the v6 module paths
  (`sentence_transformers.base.modules.transformer.Transformer`, ...); `path` is the module's subdirectory (""
  for the transformer in the root, `0_Transformer` in old saves, `1_Pooling`, `2_Normalize`).
- `<pooling path>/config.json`: `pooling_mode` ("mean", "cls", ... or a list, v6) or the boolean flags
  `pooling_mode_cls_token`, `pooling_mode_mean_tokens`, `pooling_mode_max_tokens`,
  `pooling_mode_mean_sqrt_len_tokens`, `pooling_mode_weightedmean_tokens`, `pooling_mode_lasttoken` (v2–v5: the
  flags set are concatenated in that order; none set means mean); `include_prompt`; `word_embedding_dimension`
  (v2–v5) / `embedding_dimension` (v6).
- `<transformer path>/sentence_bert_config.json`: `max_seq_length` (tokens, specials included) and `do_lower_case`;
  v6 keeps the length in the tokenizer's `tokenizer_config.json` (`model_max_length`) instead. The transformer's
  Hugging Face files (config.json, weights, tokenizer) sit in the same directory.
- `config_sentence_transformers.json`: `prompts` ({name: text prepended to the input}, e.g. e5's
  {"query": "query: ", "passage": "passage: "}), `default_prompt_name`, `similarity_fn_name`.

`read_sentence_transformers` gives a `SentenceEmbeddingConfig`; `write_sentence_transformers` writes the layout
back in the v2–v5 form, which every sentence-transformers version reads (v6 maps the old names). Only the
Transformer → Pooling → Normalize pipeline is read: other modules (Dense projections, routers, ...) are refused,
naming them.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path, PurePosixPath
from typing import Any, Mapping, Sequence

from xlm_jax.core.errors import UserError, check_choice, check_range
from xlm_jax.core.textfiles import read_text

# sentence-transformers' Pooling modes, in its legacy flag order (the order multi-mode pooling concatenates in).
POOLING_MODES = ("cls", "max", "mean", "mean_sqrt_len_tokens", "weightedmean", "lasttoken")
LEGACY_POOLING_FLAGS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}
# What modules.json's "type" ends with for each module we read (v2–v5 `sentence_transformers.models.X`, v6
# `sentence_transformers.<...>.modules.<x>.X`).
MODULE_KINDS = ("Transformer", "Pooling", "Normalize")
WRITTEN_TYPES = {kind: f"sentence_transformers.models.{kind}" for kind in MODULE_KINDS}
# transformers' "no limit" model_max_length (VERY_LARGE_INTEGER = int(1e30)).
NO_LENGTH_LIMIT = 10**29


@dataclasses.dataclass(frozen=True)
class SentenceEmbeddingConfig:
    """How token states become a sentence embedding, as a sentence-transformers directory records it.

    pooling: a mode of `POOLING_MODES`, or a tuple of them (concatenated); normalize: unit-length output (a
    Normalize module); max_seq_length: tokens per input, specials included (None: the model's limit);
    do_lower_case: inputs lowercased before tokenising; prompts: {name: prefix}; default_prompt_name: the prompt
    used when none is named (None: no prefix); include_prompt: False leaves the prompt's tokens out of the
    pooling; transformer_path: the Hugging Face model's subdirectory ("" = the directory itself);
    embedding_dimension: the transformer's hidden size as the pooling config states it (None: not stated).
    """

    pooling: str | tuple[str, ...] = "mean"
    normalize: bool = False
    max_seq_length: int | None = None
    do_lower_case: bool = False
    prompts: Mapping[str, str] = dataclasses.field(default_factory=dict)
    default_prompt_name: str | None = None
    include_prompt: bool = True
    similarity_fn_name: str = "cosine"
    transformer_path: str = ""
    embedding_dimension: int | None = None

    def __post_init__(self):
        modes = (self.pooling,) if isinstance(self.pooling, str) else tuple(self.pooling)
        if not modes:
            raise UserError(f"pooling={self.pooling!r}: give one of {', '.join(POOLING_MODES)} (or several)")
        for mode in modes:
            check_choice("pooling", mode, POOLING_MODES)
        object.__setattr__(self, "pooling", modes[0] if len(modes) == 1 else modes)
        for key in ("normalize", "do_lower_case", "include_prompt"):
            if not isinstance(getattr(self, key), bool):
                raise UserError(f"{key}={getattr(self, key)!r}: expected true or false")
        if self.max_seq_length is not None:
            check_range("max_seq_length", self.max_seq_length, 1, integer=True)
        if self.embedding_dimension is not None:
            check_range("embedding_dimension", self.embedding_dimension, 1, integer=True)
        if not isinstance(self.prompts, Mapping) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in self.prompts.items()):
            raise UserError(f"prompts={self.prompts!r}: expected a mapping of prompt names to strings")
        object.__setattr__(self, "prompts", dict(self.prompts))
        if self.default_prompt_name is not None and self.default_prompt_name not in self.prompts:
            raise UserError(f"default_prompt_name={self.default_prompt_name!r}: not one of the prompts "
                            f"({', '.join(self.prompts) or 'none'})")
        path = PurePosixPath(self.transformer_path)
        if not isinstance(self.transformer_path, str) or path.is_absolute() or ".." in path.parts:
            raise UserError(f"transformer_path={self.transformer_path!r}: must be a subdirectory of the model "
                            "directory (relative, without ..)")

    @property
    def pooling_modes(self) -> tuple[str, ...]:
        return (self.pooling,) if isinstance(self.pooling, str) else tuple(self.pooling)

    def prompt(self, name: str | None = None) -> str:
        """The prefix for prompt `name` ("" when no name is given and there is no default prompt). Raises
        UserError for a name that is not one of `prompts`, naming the valid ones."""
        if name is None:
            return "" if self.default_prompt_name is None else self.prompts[self.default_prompt_name]
        if name not in self.prompts:
            raise UserError(f"prompt_name={name!r}: this model's prompts are {', '.join(self.prompts) or 'none'}")
        return self.prompts[name]

    def prepare(self, texts: Sequence[str], prompt_name: str | None = None) -> list[str]:
        """The texts as sentence-transformers feeds them to the tokenizer: prompt prepended, then lowercased when
        `do_lower_case`."""
        prompt = self.prompt(prompt_name)
        out = [prompt + t for t in texts]
        return [t.lower() for t in out] if self.do_lower_case else out


def prompt_length(tokenizer, prompt: str) -> int:
    """Tokens of `prompt` at the start of an encoded input (its `<s>` and pieces, not the closing `</s>`), as
    sentence-transformers measures it for `include_prompt=False`; 0 for an empty prompt. `tokenizer` is a
    `xlm_jax.data.tokenizer.TokenizerLike`."""
    if not prompt:
        return 0
    ids = tokenizer.encode(prompt)
    return len(ids) - (1 if ids and ids[-1] == tokenizer.eos_id else 0)


def tokenize(tokenizer, texts: Sequence[str], config: SentenceEmbeddingConfig, prompt_name: str | None = None,
             max_len: int | None = None) -> dict:
    """Texts → the padded batch sentence-transformers' `encode` builds: int32 `input_ids` / `attention_mask`
    [B, L] (each row cut to `config.max_seq_length` tokens, or to `max_len` when the config has none), and
    `skip_first` (the prompt's length when the pooling leaves it out, else 0; see `pool`). `max_len`: the model's
    longest input (`ModelConfig.max_positions`), a cap on max_seq_length too. Raises UserError for
    no length limit at all, an unknown prompt name, or what `TokenizerLike.batch_encode` refuses."""
    limit = config.max_seq_length if config.max_seq_length is not None else max_len
    if limit is None:
        raise UserError("tokenize: the sentence-transformers config has no max_seq_length; give max_len (the "
                        "model's longest input)")
    if max_len is not None:
        limit = min(limit, max_len)
    prompt = config.prompt(prompt_name)
    enc = tokenizer.batch_encode(config.prepare(texts, prompt_name), limit)
    skip = 0 if config.include_prompt else prompt_length(tokenizer, prompt.lower() if config.do_lower_case else prompt)
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"], "skip_first": skip}


# ------------------------------------------------------------------------------------------------ reading


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(read_text(path, what))
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: not valid JSON ({e})") from None


def _kind(entry: Any, path: Path, i: int) -> str:
    if not isinstance(entry, dict) or not isinstance(entry.get("type"), str) or not isinstance(entry.get("path"), str):
        raise UserError(f"{path}: module {i} must be an object with string \"type\" and \"path\" fields, got "
                        f"{entry!r:.100}")
    name = entry["type"].rsplit(".", 1)[-1]
    if name not in MODULE_KINDS:
        raise UserError(f"{path}: module {i} is {entry['type']}, which xlm_jax does not support (supported: "
                        "Transformer → Pooling → Normalize)")
    return name


def _pooling(cfg: Any, path: Path) -> tuple[str | tuple[str, ...], bool, int | None]:
    if not isinstance(cfg, dict):
        raise UserError(f"{path}: expected a JSON object, got {cfg!r:.80}")
    if "pooling_mode" in cfg and cfg["pooling_mode"] is not None:
        mode = cfg["pooling_mode"]
        modes = (mode,) if isinstance(mode, str) else mode
        if not isinstance(modes, (list, tuple)) or not modes or not all(isinstance(m, str) for m in modes):
            raise UserError(f"{path}: pooling_mode={mode!r}: expected a mode name or a list of them")
        for m in modes:
            if m not in POOLING_MODES:
                raise UserError(f"{path}: pooling_mode={m!r} is not supported (valid: {', '.join(POOLING_MODES)})")
    else:
        unknown = [k for k, v in cfg.items() if k.startswith("pooling_mode_") and k not in LEGACY_POOLING_FLAGS and v]
        if unknown:
            raise UserError(f"{path}: {unknown[0]}=true is a pooling mode xlm_jax does not support (supported: "
                            f"{', '.join(LEGACY_POOLING_FLAGS)})")
        modes = [mode for key, mode in LEGACY_POOLING_FLAGS.items() if cfg.get(key)] or ["mean"]
    include_prompt = cfg.get("include_prompt", True)
    if not isinstance(include_prompt, bool):
        raise UserError(f"{path}: include_prompt={include_prompt!r}: expected true or false")
    dim = cfg.get("embedding_dimension", cfg.get("word_embedding_dimension"))
    if dim is not None and (not isinstance(dim, int) or isinstance(dim, bool) or dim < 1):
        raise UserError(f"{path}: embedding dimension {dim!r}: expected a positive integer")
    return (modes[0] if len(modes) == 1 else tuple(modes)), include_prompt, dim


def _max_seq_length(transformer_dir: Path) -> tuple[int | None, bool]:
    sbert = transformer_dir / "sentence_bert_config.json"
    cfg = _read_json(sbert, "sentence-transformers config") if sbert.is_file() else {}
    if not isinstance(cfg, dict):
        raise UserError(f"{sbert}: expected a JSON object, got {cfg!r:.80}")
    lower = cfg.get("do_lower_case", False)
    if not isinstance(lower, bool):
        raise UserError(f"{sbert}: do_lower_case={lower!r}: expected true or false")
    length = cfg.get("max_seq_length")
    where = sbert
    if length is None:
        tok_cfg = transformer_dir / "tokenizer_config.json"
        if tok_cfg.is_file():
            data = _read_json(tok_cfg, "tokenizer config")
            length = data.get("model_max_length") if isinstance(data, dict) else None
            where = tok_cfg
            if isinstance(length, (int, float)) and not isinstance(length, bool) and length >= NO_LENGTH_LIMIT:
                length = None
    if length is not None and (not isinstance(length, int) or isinstance(length, bool) or length < 1):
        raise UserError(f"{where}: max_seq_length {length!r}: expected a positive integer")
    return length, lower


def read_sentence_transformers(directory: str | Path) -> SentenceEmbeddingConfig:
    """The `SentenceEmbeddingConfig` of the sentence-transformers model in `directory` (layout: module docstring).

    Raises UserError naming the file and the value for: no modules.json, invalid JSON, a module other than
    Transformer → Pooling → (Normalize) or in another order, a pooling mode xlm_jax does not support, a
    non-positive or non-integer max_seq_length, prompts that are not {name: string}, or a default prompt name
    that is not one of them.
    """
    root = Path(directory)
    modules_path = root / "modules.json"
    if not modules_path.is_file():
        raise UserError(f"{root}: not a sentence-transformers model directory (no modules.json)")
    modules = _read_json(modules_path, "sentence-transformers modules list")
    if not isinstance(modules, list) or not modules:
        raise UserError(f"{modules_path}: expected a non-empty list of modules, got {modules!r:.80}")
    modules = sorted(modules, key=lambda m: m.get("idx", 0) if isinstance(m, dict) else 0)
    kinds = [_kind(m, modules_path, i) for i, m in enumerate(modules)]
    if kinds not in (["Transformer", "Pooling"], ["Transformer", "Pooling", "Normalize"]):
        raise UserError(f"{modules_path}: modules {' → '.join(kinds)}; xlm_jax reads Transformer → Pooling "
                        "(→ Normalize)")
    transformer_path = modules[0]["path"]
    pooling_path = root / modules[1]["path"] / "config.json"
    pooling, include_prompt, dim = _pooling(_read_json(pooling_path, "pooling config"), pooling_path)
    max_seq_length, lower = _max_seq_length(root / transformer_path)

    prompts, default_prompt, similarity = {}, None, "cosine"
    st_path = root / "config_sentence_transformers.json"
    if st_path.is_file():
        st = _read_json(st_path, "sentence-transformers model config")
        if not isinstance(st, dict):
            raise UserError(f"{st_path}: expected a JSON object, got {st!r:.80}")
        prompts = st.get("prompts") or {}
        if not isinstance(prompts, dict) or not all(isinstance(v, str) for v in prompts.values()):
            raise UserError(f"{st_path}: prompts={prompts!r:.100}: expected {{name: string}}")
        default_prompt = st.get("default_prompt_name")
        if default_prompt is not None and default_prompt not in prompts:
            raise UserError(f"{st_path}: default_prompt_name={default_prompt!r} is not one of the prompts "
                            f"({', '.join(prompts) or 'none'})")
        similarity = st.get("similarity_fn_name") or "cosine"
        if not isinstance(similarity, str):
            raise UserError(f"{st_path}: similarity_fn_name={similarity!r}: expected a string")
    return SentenceEmbeddingConfig(
        pooling=pooling, normalize=len(kinds) == 3, max_seq_length=max_seq_length, do_lower_case=lower,
        prompts=prompts, default_prompt_name=default_prompt, include_prompt=include_prompt,
        similarity_fn_name=similarity, transformer_path=transformer_path, embedding_dimension=dim)


# ------------------------------------------------------------------------------------------------ writing


def write_sentence_transformers(directory: str | Path, config: SentenceEmbeddingConfig, embedding_dimension: int,
                                *, force: bool = False) -> Path:
    """Writes the sentence-transformers files of `config` into `directory` and returns the directory where the
    transformer's Hugging Face files belong (`directory / config.transformer_path`): its config.json and weights
    (`xlm_jax.convert.export_hf(params, model_config, that_dir, "XLMRobertaModel")`) and tokenizer files.

    Written (v2–v5 form, read by every sentence-transformers version): modules.json, 1_Pooling/config.json
    (the legacy pooling flags, `word_embedding_dimension` = embedding_dimension, include_prompt),
    2_Normalize/ when `config.normalize`, <transformer>/sentence_bert_config.json (max_seq_length,
    do_lower_case) and config_sentence_transformers.json (prompts, default_prompt_name, similarity_fn_name).

    Raises UserError when modules.json already exists (unless `force`), for a non-positive embedding_dimension
    (or one that differs from `config.embedding_dimension`), or for several pooling modes out of the legacy flag
    order (the flags cannot express another concatenation order).
    """
    check_range("embedding_dimension", embedding_dimension, 1, integer=True)
    if config.embedding_dimension is not None and config.embedding_dimension != embedding_dimension:
        raise UserError(f"embedding_dimension={embedding_dimension}: the config says {config.embedding_dimension}")
    modes = config.pooling_modes
    if list(modes) != [m for m in POOLING_MODES if m in modes]:
        raise UserError(f"pooling={list(modes)}: several modes must come in the order {', '.join(POOLING_MODES)} "
                        "(sentence-transformers' pooling flags concatenate in that order)")
    root = Path(directory)
    if (root / "modules.json").exists() and not force:
        raise UserError(f"{root / 'modules.json'}: exists; nothing was changed. Choose another directory, or pass "
                        "force=True to replace the sentence-transformers files")
    transformer_dir = root / config.transformer_path
    modules = [{"idx": 0, "name": "0", "path": config.transformer_path, "type": WRITTEN_TYPES["Transformer"]},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": WRITTEN_TYPES["Pooling"]}]
    if config.normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": WRITTEN_TYPES["Normalize"]})
    pooling = {"word_embedding_dimension": embedding_dimension,
               **{key: mode in modes for key, mode in LEGACY_POOLING_FLAGS.items()},
               "include_prompt": config.include_prompt}
    sbert = {"max_seq_length": config.max_seq_length, "do_lower_case": config.do_lower_case}
    if config.max_seq_length is None:
        del sbert["max_seq_length"]
    st = {"prompts": config.prompts, "default_prompt_name": config.default_prompt_name,
          "similarity_fn_name": config.similarity_fn_name}

    def dump(path: Path, data) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")

    dump(root / "1_Pooling" / "config.json", pooling)
    if config.normalize:
        (root / "2_Normalize").mkdir(parents=True, exist_ok=True)
    dump(transformer_dir / "sentence_bert_config.json", sbert)
    dump(root / "config_sentence_transformers.json", st)
    dump(root / "modules.json", modules)  # last: a directory with modules.json is complete
    return transformer_dir
