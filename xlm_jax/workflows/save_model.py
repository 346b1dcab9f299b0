"""`LoadedModel.save`: a model in memory -> our checkpoint layout or a Hugging Face directory, with its tokenizer.

The layouts are `python -m xlm_jax.convert`'s (and so is the output's owner: `convert` and `save` may replace each
other's outputs): format "xlm_jax" writes `DIR/0/` (params + model config, `xlm_jax.training.checkpoint`), a
fine-tuned model's `DIR/task.json` beside it, the tokenizer as `DIR/tokenizer.model` (a SentencePiece model) or
`DIR/tokenizer.json` (+ its configuration files) and `DIR/tokenizer_record.json` (its sha256); format "hf" writes
`config.json` + `model.safetensors` (`convert.export_hf`) and the tokenizer as transformers reads it:
`sentencepiece.bpe.model` for a SentencePiece model (XLMRobertaTokenizer's name), `tokenizer.json` (+
tokenizer_config.json / special_tokens_map.json) for a Hugging Face one. Everything is written to a temporary
sibling of DIR and renamed into place (`xlm_jax.core.outputs.write_atomically`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import numpy as np

from xlm_jax.core import outputs
from xlm_jax.core.errors import check_choice
from xlm_jax.data.tokenizer_files import RUN_RECORD
from xlm_jax.models.config import EncoderDecoderConfig, ModelConfig
from xlm_jax.training import checkpoint
from xlm_jax.workflows import convert
from xlm_jax.workflows.loading import TASK_FILE
from xlm_jax.workflows.tokenizer_check import copy_tokenizer

FORMATS = ("xlm_jax", "hf")
OWNER = "convert"  # the layout is convert's: either may replace the other's output


def save_model(directory: str | Path, params: Any, config: ModelConfig | EncoderDecoderConfig, tokenizer=None,
               task=None, format: str = "xlm_jax", force: bool = False) -> Path:
    """Writes the model to `directory` (see the module docstring) -> the directory.

    `params`: the parameter tree (JAX or NumPy arrays); `tokenizer`: a Tokenizer / HFTokenizer or None; `task`:
    a fine-tuned model's `TaskInfo` or None. Raises UserError, before anything is written, for a format other
    than "xlm_jax" / "hf", a `directory` that exists and holds files `convert` / `save` did not write (unless
    `force`), a file or an unwritable place, and a model transformers has no class for."""
    check_choice("format", format, FORMATS)
    dst = outputs.check_dir(directory, OWNER, force=force, flag="force=True")
    host = jax.tree_util.tree_map(np.asarray, jax.device_get(params))

    def write(tmp: Path) -> None:
        tmp.mkdir(parents=True, exist_ok=True)
        if tokenizer is not None:
            copy_tokenizer(tokenizer, tmp, "sentencepiece.bpe.model" if format == "hf" else "tokenizer.model")
        if format == "hf" and isinstance(config, EncoderDecoderConfig):
            convert.export_hf_seq2seq(host, config, tmp)  # an encoder-decoder: transformers' EncoderDecoderModel
            return
        if format == "hf":
            convert.export_hf(host, config, tmp, task=task)  # a fine-tuned model: the class with its head and labels
            return
        checkpoint.save_params(tmp.absolute(), host, config, step=0)
        if task is not None:
            (tmp / TASK_FILE).write_text(task.to_json())
        if tokenizer is not None:
            outputs.write_json(tmp / RUN_RECORD, {"sha256": tokenizer.sha256,
                                               "path": str(Path(tokenizer.path).absolute())})

    outputs.write_atomically(dst, write, OWNER)
    return dst
