"""Table-driven HF state-dict <-> parameter-tree conversion for the families whose HF tensors may be fused
(ModernBERT's `Wqkv` [3 D, D] and `Wi` [2 F, D]) or missing from some layers (ModernBERT's layer 0 has no
`attn_norm`): `xlm_jax.models.hf_modernbert`, `xlm_jax.models.hf_eurobert`.

One table per (family, architecture) drives both directions, as `xlm_jax.models.hf_mapping` does for XLM / XLM-R,
whose layout helpers (`_to_hf`, `check_shape`, `_get`, `_set`) this module reuses. Our kernels keep heads as axes
([D, H, Dh] for q / k / v, [H, Dh, D] for the attention output); HF's `nn.Linear` weights are [out, in]. The
conversion to our layout is driven by our parameter shapes, so grouped key / value heads need nothing special.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from xlm_jax.core.errors import UserError
from xlm_jax.models.config import ModelConfig
from xlm_jax.models.hf_mapping import _get, _set, _to_hf, check_shape

QKV, OUT, DENSE, COPY = "qkv", "out", "dense", "copy"


@dataclasses.dataclass(frozen=True)
class Piece:
    """One of our tensors and where HF keeps it.

    `part` / `parts`: our tensor is slice `part` of `parts` equal slices of the HF tensor along its first (output)
    axis (fused projections). `first_layer`: HF has the tensor only from that layer on; ours holds `fill` before.
    """

    ours: tuple[str, ...]
    hf: str  # "{i}" for per-layer tensors
    kind: str  # COPY | QKV | OUT | DENSE; kernel or bias from the last element of `ours`
    per_layer: bool = False
    part: int = 0
    parts: int = 1
    first_layer: int = 0
    fill: float = 0.0


def linear(ours: tuple[str, ...], hf: str, kind: str, bias: bool, per_layer: bool = False, **kw) -> list[Piece]:
    """kernel (+ bias) of one HF nn.Linear `hf` (without .weight)."""
    out = [Piece(ours + ("kernel",), f"{hf}.weight", kind, per_layer, **kw)]
    return out + ([Piece(ours + ("bias",), f"{hf}.bias", kind, per_layer, **kw)] if bias else [])


def norm(ours: tuple[str, ...], hf: str, bias: bool, per_layer: bool = False, first_layer: int = 0) -> list[Piece]:
    out = [Piece(ours + ("scale",), f"{hf}.weight", COPY, per_layer, first_layer=first_layer, fill=1.0)]
    if bias:
        out.append(Piece(ours + ("bias",), f"{hf}.bias", COPY, per_layer, first_layer=first_layer, fill=0.0))
    return out


def _to_ours(w: np.ndarray, kind: str, leaf: str, want: tuple) -> np.ndarray:
    if kind == COPY or leaf == "bias":
        return w.reshape(want)
    return w.T.reshape(want)


def _hf_shape(kind: str, leaf: str, ours_shape: tuple, parts: int) -> tuple:
    shape = _to_hf(np.empty(ours_shape, np.float32), kind, leaf).shape
    return (shape[0] * parts,) + tuple(shape[1:])


def _layer_keys(piece: Piece, cfg: ModelConfig) -> list[tuple[int, str | None]]:
    if not piece.per_layer:
        return [(0, piece.hf)]
    return [(i, piece.hf.format(i=i) if i >= piece.first_layer else None) for i in range(cfg.num_layers)]


def hf_to_params(table: list[Piece], state: dict[str, np.ndarray], cfg: ModelConfig, params_shapes: dict,
                 source: str) -> dict:
    """Our (unboxed, NumPy float32) parameter tree from an HF state dict: every tensor checked by name and shape
    (UserError naming the HF tensor, its shape and the expected one)."""
    params: dict = {}
    for piece in table:
        want = tuple(_get(params_shapes, piece.ours))
        one = want[1:] if piece.per_layer else want
        tensors = []
        for _, key in _layer_keys(piece, cfg):
            if key is None:
                tensors.append(np.full(one, piece.fill, np.float32))
                continue
            if key not in state:
                raise UserError(f"{source}: missing tensor {key} (needed for {'/'.join(piece.ours)})")
            w = np.asarray(state[key], np.float32)
            check_shape(key, w.shape, _hf_shape(piece.kind, piece.ours[-1], one, piece.parts), source)
            n = w.shape[0] // piece.parts
            tensors.append(_to_ours(w[piece.part * n:(piece.part + 1) * n], piece.kind, piece.ours[-1], one))
        _set(params, piece.ours, np.stack(tensors) if piece.per_layer else tensors[0])
    return params


def params_to_hf(table: list[Piece], params: dict, cfg: ModelConfig) -> dict[str, np.ndarray]:
    """Our parameter tree -> HF state dict (fused tensors concatenated in part order; layers HF lacks left out)."""
    slices: dict[str, dict[int, np.ndarray]] = {}
    for piece in table:
        w = np.asarray(_get(params, piece.ours), np.float32)
        for i, key in _layer_keys(piece, cfg):
            if key is not None:
                one = w[i] if piece.per_layer else w
                slices.setdefault(key, {})[piece.part] = _to_hf(one, piece.kind, piece.ours[-1])
    return {key: np.ascontiguousarray(np.concatenate([parts[p] for p in sorted(parts)], axis=0))
            for key, parts in slices.items()}


def expected_hf_shapes(table: list[Piece], cfg: ModelConfig, params_shapes: dict) -> dict[str, tuple]:
    """HF key -> shape, derived from our parameter shapes."""
    out: dict[str, tuple] = {}
    for piece in table:
        want = tuple(_get(params_shapes, piece.ours))
        shape = _hf_shape(piece.kind, piece.ours[-1], want[1:] if piece.per_layer else want, piece.parts)
        for _, key in _layer_keys(piece, cfg):
            if key is not None:
                out[key] = shape
    return out


def head_of(architecture: str, family_prefix: str) -> str | None:
    """"mlm", "sequence", "token", "span" or None (the bare encoder) from an HF class name."""
    suffix = architecture.removeprefix(family_prefix)
    return {"ForMaskedLM": "mlm", "ForSequenceClassification": "sequence", "ForTokenClassification": "token",
            "ForQuestionAnswering": "span", "Model": None}[suffix]


def strip_prefix(state: dict[str, np.ndarray], prefix: str = "model.") -> dict[str, np.ndarray]:
    """A state dict written by a model with a head, read as its bare encoder: `model.` prefixes dropped, head
    tensors left (they are not read)."""
    if not any(k.startswith(prefix) for k in state):
        return state
    return {k.removeprefix(prefix): v for k, v in state.items()}


def bias_setting(hf: dict, keys: tuple[str, ...], source: str) -> bool:
    """Our single `use_bias` from HF's per-part bias flags, which must agree."""
    values = {k: bool(hf.get(k, False)) for k in keys}
    if len(set(values.values())) > 1:
        raise UserError(f"{source}: mixed bias settings {values} are not supported (xlm_jax has one use_bias for "
                        "attention, MLP, norms and the head transform)")
    return next(iter(values.values()))
