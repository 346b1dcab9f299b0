"""The model rows of an extended vocabulary (`xlm_jax.data.vocab.extend_tokenizer`): `extend_embeddings(params, config,
base, extended, layout)` gives a model the rows of the new ids, used by continued pretraining (`xlm_jax.pretrain.adapt`).

New rows. A new piece's embedding row starts as the mean of the rows of the pieces the *base* tokenizer splits
the piece's surface string into: the initialisation of Fast Vocabulary Transfer (Gee, Zugarini, Rigutini, Torroni,
"Fast Vocabulary Transfer for Language Model Compression", EMNLP 2022 industry track, arXiv:2402.09977), far
better than random rows for continued pretraining. A base `<unk>` in that split (a character the base does not
know) stands for the mean of all the base's piece rows, Hewitt's initialisation for words with nothing to inherit
("Initializing New Word Embeddings for Pretrained Language Models", 2021,
https://nlp.stanford.edu/~johnhew/vocab-expansion.html). A piece the base splits only into `<unk>` therefore
starts at that mean.

The output side. The LM head's output projection is tied to the embeddings, so a new row is also a new output
word, and the split mean alone makes it about as likely as the pieces it is made of: a Georgian piece the base
splits into `▁` + `<unk>` inherits half of `▁`'s logit, and `▁` is a small model's favourite prediction almost
everywhere, so before any training the new ids took 64-77 % of the probability at masked positions of English,
German and Japanese text (docs/adaptation.md). The LM-head bias is the one free parameter: a new id's bias is
the mean of its split's biases (`<unk>` as the mean of the base pieces' biases) minus log N, N the number of new
pieces. With h the head's transformed state, z_j = h . e_j + b_j the logits of the old ids, Z = sum_j exp(z_j),
p(j) = exp(z_j) / Z the base model's probabilities and p(<unk>) read as the mean p of the base pieces, each new
logit is z_k = mean_{i in split(k)} z_i - log N (the `<unk>` term is mean_j z_j), so by Jensen's inequality
exp(z_k) <= (Z / N) mean_{i in split(k)} p(i), and summed over the N new ids

    M / (1 - M) <= q = mean_k mean_{i in split(k)} p(i) <= 1,      M = the probability on the new ids,

at every position of every input: the new pieces together take no more (in odds) than one average piece of their
splits, M <= 1/2 always, and the old ids keep their base distribution scaled by 1 - M >= 1 / (1 + q) (a base
perplexity rise by a factor of at most 1 + q). In practice the bound is loose: M was 0.1-0.2 % for
docs/adaptation.md's model. The input side is the split mean unchanged, so a new piece still enters the encoder
as its base split did.

"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from xlm_jax.core.errors import UserError
from xlm_jax.data.tokenizer import FAIRSEQ_OFFSET, UNK_ID, Tokenizer
from xlm_jax.data.vocab import LAYOUTS, SPECIAL_IDS, no_prefix_processor
from xlm_jax.models.config import XLMR_SPECIALS, ModelConfig


# ------------------------------------------------------------------------------------------- the model rows


def _leaf(params: Any, path: tuple[str, ...]):
    node = params
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def _set_leaf(params: dict, path: tuple[str, ...], value) -> dict:
    """A copy of the dicts along `path` with the leaf replaced; every other subtree is shared, not copied."""
    if not path:
        return value
    out = dict(params)
    out[path[0]] = _set_leaf(params[path[0]], path[1:], value)
    return out


EMBEDDING_PATH = ("encoder", "embeddings", "word_embeddings", "embedding")
LM_BIAS_PATH = ("lm_head", "bias")
LM_DECODER_PATH = ("lm_head", "decoder", "kernel")  # an untied LM projection [D, V] (EuroBERT)


def base_split(base: Tokenizer, extended: Tokenizer) -> dict[int, list[int]]:
    """{fairseq id of each added piece: the fairseq ids the base splits its surface string into} (`<unk>` = 3)."""
    sp = no_prefix_processor(base)
    n_base = base.sp.get_piece_size()
    out = {}
    for spm_id in range(n_base, extended.sp.get_piece_size()):
        surface = extended.sp.id_to_piece(spm_id).replace("▁", " ")
        ids = np.asarray(sp.encode(surface), np.int64) + FAIRSEQ_OFFSET
        ids[ids == FAIRSEQ_OFFSET] = UNK_ID
        out[spm_id + FAIRSEQ_OFFSET] = ids.tolist() or [UNK_ID]
    return out


def _check_extension(config: ModelConfig, base: Tokenizer, extended: Tokenizer, layout: str) -> None:
    for name, tok in (("base", base), ("extended", extended)):
        if not isinstance(tok, Tokenizer):
            raise UserError(f"{name} must be an xlm_jax Tokenizer (`Tokenizer.load(PATH.model)`), got "
                            f"{type(tok).__name__} {tok!r:.60}")
    if not isinstance(config, ModelConfig):
        raise UserError(f"config must be a ModelConfig, got {type(config).__name__}")
    if layout not in LAYOUTS:
        raise UserError(f"layout={layout!r}: valid layouts are {', '.join(map(repr, LAYOUTS))}")
    specials = {k: getattr(config, k) for k in XLMR_SPECIALS}
    if layout == "xlm":
        # The layout is the id layout, not the model family: an XLM-family model trained here has fairseq ids.
        hint = (" (this config's special ids are the 'xlmr' layout's: pass layout='xlmr')"
                if specials == XLMR_SPECIALS and config.mask_id == config.vocab_size - 1 else "")
        raise UserError("layout='xlm' (the original XLM models' Moses + fastBPE dictionary, <mask> at id 5) "
                        "cannot be extended: its vocabulary is not a SentencePiece model. Only the 'xlmr' "
                        f"(fairseq) layout of SentencePiece vocabularies can be{hint}")
    if specials != XLMR_SPECIALS or config.mask_id != config.vocab_size - 1:
        raise UserError(f"the model's special ids {specials | {'mask_token_id': config.mask_id}} are not the "
                        f"'xlmr' layout's {XLMR_SPECIALS | {'mask_token_id': config.vocab_size - 1}} (<mask> "
                        "last); this checkpoint cannot be extended with a SentencePiece vocabulary")
    if config.vocab_size != len(base):
        raise UserError(f"the model has vocab_size={config.vocab_size} rows but the base tokenizer {base.path} has "
                        f"{len(base)} ids; give the tokenizer the checkpoint was trained with")
    n_base, n_ext = base.sp.get_piece_size(), extended.sp.get_piece_size()
    if n_ext <= n_base:
        raise UserError(f"{extended.path} has {len(extended)} ids, not more than the base's {len(base)}: it does "
                        "not extend it (make one with `python -m xlm_jax.tokenizer extend`)")
    for i in range(n_base):
        if extended.sp.id_to_piece(i) != base.sp.id_to_piece(i):
            raise UserError(f"{extended.path} is not an extension of {base.path}: id {i + FAIRSEQ_OFFSET} is "
                            f"{extended.sp.id_to_piece(i)!r} there but {base.sp.id_to_piece(i)!r} in the base "
                            "(an extension keeps every base piece at its id)")


def _extend_rows(table: np.ndarray, splits: dict[int, list[int]], n_ext_ids: int, what: str,
                 offset: float = 0.0) -> np.ndarray:
    """[V, ...] -> [V', ...]: old rows copied bit for bit, <mask> (row V-1) moved to V'-1, new rows the mean of
    their split's rows plus `offset`."""
    v = table.shape[0]
    mask_old, mask_new = v - 1, n_ext_ids - 1
    pieces = np.arange(len(SPECIAL_IDS), mask_old)  # the base's pieces: no special, no <mask>
    if not pieces.size:
        raise UserError(f"the {what} has {v} rows: no piece row to initialise new rows from")
    work = table.astype(np.float32) if table.dtype != np.float64 else table
    prior = work[pieces].mean(axis=0)  # what <unk> in a split stands for
    out = np.empty((n_ext_ids,) + table.shape[1:], table.dtype)
    out[:mask_old] = table[:mask_old]
    out[mask_new] = table[mask_old]
    for new_id, split in splits.items():
        rows = [prior if i == UNK_ID else work[i] for i in split]
        out[new_id] = (np.mean(rows, axis=0) + offset).astype(table.dtype)
    return out


def extend_embeddings(params: dict, config: ModelConfig, base: Tokenizer, extended: Tokenizer,
                      layout: str = "xlmr") -> tuple[dict, ModelConfig]:
    """Resize a model for an extended tokenizer: -> (params, config with vocab_size = len(extended)).

    `params`: our parameter tree (`xlm_jax.models.xlm`; host NumPy or jax arrays, boxed ones are unboxed), an MLM
    model's or an encoder with a task head. The word embeddings [V, D] become [V', D] and the LM-head bias [V]
    becomes [V'] (when the tree has an LM head with a bias; a tied output projection needs nothing more). An untied
    projection (EuroBERT: lm_head/decoder/kernel [D, V]) gets its new columns as the embeddings get their new
    rows (split means; without an LM-head bias the log N offset, and with it the bound below, does not apply).
    Rows of ids 0 .. V-2 are copied bit for bit; `<mask>`'s trained row (embedding and bias) moves from V-1 to
    V'-1, the last id, as fairseq and Hugging Face expect; each new piece's row is the mean of the base rows of
    its base split, `<unk>` counting as the mean of all base piece rows (Gee et al. 2022 / Hewitt 2021:
    see the module docstring); its bias is the mean of the split's biases minus log N (N = V' - V new pieces),
    which bounds the probability M the extended model puts on the new ids at any position by
    M / (1 - M) <= the mean base probability of the new pieces' split pieces <= 1 (so M <= 1/2; module
    docstring), and leaves the distribution over the old ids the base one scaled by 1 - M. Resized leaves are
    NumPy arrays of the input dtype (means computed in float32), every other leaf is returned as given. `config.mask_token_id` stays "last".

    `layout`: the id layout (as `data.tlm_layout` names them, not `config.family`): "xlmr" (fairseq:
    `<s> <pad> </s> <unk>`, spm id + 1, `<mask>` last; every SentencePiece vocabulary here, XLM-family models
    trained by this project included) is the only one that can be extended; "xlm" (the original XLM models'
    fastBPE dictionaries) is refused.

    Raises UserError for another layout, a config that is not in the xlmr layout, `config.vocab_size` !=
    len(base), an `extended` that does not keep every base piece at its id or adds nothing, and a tree without
    encoder/embeddings/word_embeddings/embedding of shape [config.vocab_size, hidden] (or an LM-head bias whose
    shape is not [config.vocab_size])."""
    import flax.linen as nn

    _check_extension(config, base, extended, layout)
    params = nn.unbox(params)  # a tree fresh from `init_params` carries logical-axis boxes: plain arrays out
    table = _leaf(params, EMBEDDING_PATH)
    if table is None or getattr(table, "shape", None) != (config.vocab_size, config.hidden_size):
        found = "missing" if table is None else f"of shape {tuple(getattr(table, 'shape', ()))}"
        raise UserError(f"params: {'/'.join(EMBEDDING_PATH)} is {found}; expected [{config.vocab_size}, "
                        f"{config.hidden_size}] (an xlm_jax.models.xlm parameter tree)")
    splits = base_split(base, extended)
    n = len(extended)
    out = _set_leaf(params, EMBEDDING_PATH, _extend_rows(np.asarray(table), splits, n, "word embedding table"))
    bias = _leaf(params, LM_BIAS_PATH)
    if bias is not None:
        if getattr(bias, "shape", None) != (config.vocab_size,):
            raise UserError(f"params: {'/'.join(LM_BIAS_PATH)} has shape {tuple(getattr(bias, 'shape', ()))}; "
                            f"expected [{config.vocab_size}]")
        # minus log N: the new ids together start no likelier than one piece of their splits (module docstring).
        out = _set_leaf(out, LM_BIAS_PATH, _extend_rows(np.asarray(bias), splits, n, "LM-head bias",
                                                        offset=-float(np.log(len(splits)))))
    decoder = _leaf(params, LM_DECODER_PATH)
    if decoder is not None:  # untied projection: its columns are output embeddings, extended as the rows are
        if getattr(decoder, "shape", None) != (config.hidden_size, config.vocab_size):
            raise UserError(f"params: {'/'.join(LM_DECODER_PATH)} has shape {tuple(getattr(decoder, 'shape', ()))}"
                            f"; expected [{config.hidden_size}, {config.vocab_size}]")
        columns = _extend_rows(np.asarray(decoder).T, splits, n, "LM projection")
        out = _set_leaf(out, LM_DECODER_PATH, np.ascontiguousarray(columns.T))
    mask = {} if config.mask_token_id < 0 else {"mask_token_id": n - 1}
    return out, dataclasses.replace(config, vocab_size=n, **mask)
