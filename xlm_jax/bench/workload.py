"""What the bench measures, shared by the parent and both workers: the named configurations, the one MLM batch
every side trains on, and the timing and memory helpers of the workers. Neither jax nor torch is imported here."""

from __future__ import annotations

import dataclasses
import resource
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from xlm_jax.data.masking import MaskConfig, mask_tokens, noise_width
from xlm_jax.data.packing import first_fit, pack
from xlm_jax.models import hf_families
from xlm_jax.models.config import ModelConfig, from_dict, get_model_config

ARCH = "XLMRobertaForMaskedLM"
FRAMEWORKS = ("jax", "torch_eager", "torch_masked", "torch_compile")
TORCH_SIDES = FRAMEWORKS[1:]
LR, WARMUP_STEPS, TOTAL_STEPS = 1e-4, 10, 100_000  # the same linear schedule on both sides


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    name: str
    model: ModelConfig
    batch: int
    seq_len: int
    devices: tuple[str, ...]  # where this configuration is run by default
    # Rows of the batch (`make_batch`): "full" (every row one full-length example), "padded" (one example of
    # random length a row, padding after it) or "packed" (examples of the same length law packed by segment ids).
    layout: str = "full"

    @property
    def tokens_per_step(self) -> int:
        return self.batch * self.seq_len


def _cfg(name: str, model: ModelConfig, batch: int, seq_len: int, devices: tuple[str, ...]) -> BenchConfig:
    return BenchConfig(name, model.replace(max_positions=max(model.max_positions, seq_len)), batch, seq_len, devices)


CONFIGS: dict[str, BenchConfig] = {
    c.name: c
    for c in (
        # XLM-R shaped (full 250,002 vocabulary) but CPU sized: the LM head dominates, as in the real models.
        _cfg("cpu_xlmr", get_model_config("xlmr_base", num_layers=4, hidden_size=256, num_heads=4,
                                          intermediate_size=1024), 16, 128, ("cpu",)),
        _cfg("tiny", get_model_config("xlmr_tiny"), 16, 128, ("cpu", "gpu")),
        _cfg("xlmr_base", get_model_config("xlmr_base"), 32, 512, ("gpu",)),
        _cfg("xlmr_large", get_model_config("xlmr_large"), 16, 512, ("gpu",)),
        # mmBERT shaped (Gemma 2's 256,000 vocabulary, global attention every 3rd layer, a 128-token window
        # elsewhere, GeGLU 3x wide) at cpu_xlmr's CPU size and tokens per step, in rows long enough (512) for the
        # window to matter: the PyTorch sides are transformers' ModernBertForMaskedLM.
        _cfg("cpu_mmbert", get_model_config("mmbert_small", num_layers=4, hidden_size=256, num_heads=4,
                                            intermediate_size=768), 4, 512, ("cpu",)),
        # XLM-R at cpu_mmbert's shape, for `--varlen` (inference on variable-length batches) only: the same layers,
        # width, heads and rows, and the MLP's parameter count (a GELU 1152 wide = GeGLU 768's 3 x 256 x 768).
        _cfg("cpu_xlmr_mmshape", get_model_config("xlmr_base", num_layers=4, hidden_size=256, num_heads=4,
                                                  intermediate_size=1152), 4, 512, ()),
        # Seconds-long CI check of the whole pipeline.
        _cfg("smoke", get_model_config("xlmr_tiny", num_layers=1, hidden_size=32, num_heads=2,
                                       intermediate_size=64, vocab_size=200), 2, 32, ()),
        _cfg("smoke_modernbert", get_model_config("modernbert_tiny", num_layers=2, hidden_size=32, num_heads=2,
                                                  intermediate_size=48, vocab_size=200, global_attn_every_n=2),
             2, 32, ()),
    )
}


def hf_architecture(m: ModelConfig) -> str:
    """The transformers masked-LM class the PyTorch sides train for `m`'s family (XLMRobertaForMaskedLM for XLM-R)."""
    module = hf_families.module_for(m.family)
    return ARCH if module is None else module.default_architecture(m, "mlm")


LAYOUTS = ("full", "padded", "packed")
PACK_SEGMENTS = 16  # most examples a packed row may hold


def example_lengths(rng: np.random.Generator, n: int, seq_len: int) -> np.ndarray:
    """Lengths (special tokens included) of `n` examples of the padded / packed layouts: uniform in
    [max(4, seq_len // 8), seq_len], a mean of ~56 % of the row (sentence-pair data, not full-length streams)."""
    return rng.integers(max(4, seq_len // 8), seq_len + 1, size=n)


def _examples(rng: np.random.Generator, lengths, m: ModelConfig) -> list[np.ndarray]:
    # Below <mask> as the full rows (XLM-R: 4 .. V-2); above it where <mask> is a low id (mmBERT's Gemma specials).
    low, high = (4, m.mask_id) if m.mask_id > 4 else (m.mask_id + 1, m.vocab_size)
    out = []
    for n in lengths:
        ids = rng.integers(low, high, size=int(n), dtype=np.int64)
        ids[0], ids[-1] = m.bos_token_id, m.eos_token_id
        out.append(ids)
    return out


def make_batch(cfg: BenchConfig, seed: int = 0) -> dict[str, np.ndarray]:
    """One MLM batch in the data contract's layout, masked 15 % (80/10/10), by `cfg.layout`: "full" rows
    `<s> w... </s>`; "padded": one example `<s> w... </s>` of `example_lengths` a row, then <pad>; "packed": such
    examples packed first-fit decreasing (`xlm_jax.data.packing`) into the rows, with `segment_ids` (1, 2, ... a row,
    0 on padding) and positions restarting per example. Ids are uniform random over the vocabulary."""
    m = cfg.model
    rng = np.random.default_rng(seed)
    b, t = cfg.batch, cfg.seq_len
    extra = {}
    if cfg.layout == "full":
        low, high = (4, m.mask_id) if m.mask_id > 4 else (m.mask_id + 1, m.vocab_size)  # as _examples
        ids = rng.integers(low, high, size=(b, t), dtype=np.int64)
        ids[:, 0], ids[:, -1] = m.bos_token_id, m.eos_token_id
        attention = np.ones((b, t), np.int32)
        positions = np.broadcast_to(np.arange(t, dtype=np.int32), (b, t)).copy()
    elif cfg.layout == "padded":
        examples = _examples(rng, example_lengths(rng, b, t), m)
        ids = np.full((b, t), m.pad_token_id, np.int64)
        for r, ex in enumerate(examples):
            ids[r, :len(ex)] = ex
        attention = (np.arange(t)[None, :] < np.array([len(e) for e in examples])[:, None]).astype(np.int32)
        positions = (np.arange(t, dtype=np.int32)[None, :] * attention).astype(np.int32)
    elif cfg.layout == "packed":
        # Enough examples for first-fit decreasing to fill the b rows it keeps (its first rows are the fullest).
        n = int(np.ceil(b * t / (0.56 * t) * 1.5)) + PACK_SEGMENTS
        examples = _examples(rng, example_lengths(rng, n, t), m)
        rows = first_fit([len(e) for e in examples], t, PACK_SEGMENTS)[:b]
        packed = pack(examples, rows, t, PACK_SEGMENTS, m.pad_token_id, n_rows=b)
        ids, attention, positions = packed["input_ids"].astype(np.int64), packed["attention_mask"], packed["positions"]
        extra = {"segment_ids": packed["segment_ids"]}
    else:
        raise ValueError(f"layout={cfg.layout!r}: valid layouts are {', '.join(LAYOUTS)}")
    mask_cfg = MaskConfig(vocab_size=m.vocab_size, mask_id=m.mask_id)
    masked = mask_tokens(ids, attention, rng.random((b, noise_width(t, mask_cfg.mask_prob))), mask_cfg)
    return {
        "input_ids": masked["input_ids"],
        "attention_mask": attention,
        "positions": positions,
        "langs": np.zeros((b, t), np.int32),
        "mlm_positions": masked["mlm_positions"],
        "mlm_targets": masked["mlm_targets"],
        "mlm_weights": masked["mlm_weights"],
        "example_lang": np.zeros((b,), np.int32),
        **extra,
    }


# ------------------------------------------------------------------- variable-length inference (--varlen)

VARLEN_SENTENCES = 32  # sentences in the --varlen set, per row of the configuration's batch
VARLEN_PADDED_ROWS = 8  # sentences per padded batch, per row of the configuration's batch
VARLEN_SIGMA = 1.0  # spread of the log-normal length law


def varlen_lengths(rng: np.random.Generator, n: int, seq_len: int) -> np.ndarray:
    """Lengths (special tokens included) of the `--varlen` sentences: log-normal with median max(4, seq_len / 16)
    and sigma `VARLEN_SIGMA`, rounded and clipped to [4, seq_len]: many short sentences, a few long ones (at
    seq_len 512: median 32, mean ~53, 1 % above ~330), as in text read for embedding or classification."""
    median = max(4.0, seq_len / 16)
    drawn = np.rint(rng.lognormal(np.log(median), VARLEN_SIGMA, size=n))
    return np.clip(drawn, 4, seq_len).astype(np.int64)


def varlen_set(cfg: BenchConfig, seed: int = 0) -> dict[str, Any]:
    """The `--varlen` workload: the same `VARLEN_SENTENCES * batch` sentences (`<s> w... </s>`, uniform random ids,
    lengths from `varlen_lengths`; the lengths depend only on seed, batch and seq_len, so two configurations of the
    same shape encode the same lengths) laid out two ways:
    - "padded": consecutive groups of `VARLEN_PADDED_ROWS * batch` sentences, each group padded to its own longest
      sentence (one batch shape per group, as a tokenizer's `padding=True` gives);
    - "packed": all of them packed first-fit decreasing into rows of seq_len (`xlm_jax.data.packing`, at most
      `PACK_SEGMENTS` a row) with segment ids, in batches of `batch` rows (the last filled with empty rows).
    Returns {"padded": [{"input_ids", "attention_mask"} int64 / int32 [b, t]], "packed": [{... "segment_ids"}
    [batch, seq_len]], "padded_where" / "packed_where": int64 [N, 4] (batch, row, first token, length) of each
    sentence, "sentences", "real_tokens", "padded_slots", "packed_slots"}."""
    m = cfg.model
    rng = np.random.default_rng(seed)
    n, group = VARLEN_SENTENCES * cfg.batch, VARLEN_PADDED_ROWS * cfg.batch
    lengths = varlen_lengths(rng, n, cfg.seq_len)
    examples = _examples(rng, lengths, m)
    padded, padded_where = [], np.zeros((n, 4), np.int64)
    for k, first in enumerate(range(0, n, group)):
        members = examples[first:first + group]
        ids = np.full((len(members), max(len(e) for e in members)), m.pad_token_id, np.int64)
        for r, ex in enumerate(members):
            ids[r, :len(ex)] = ex
            padded_where[first + r] = (k, r, 0, len(ex))
        padded.append({"input_ids": ids, "attention_mask": (ids != m.pad_token_id).astype(np.int32)})
    rows = first_fit(lengths, cfg.seq_len, PACK_SEGMENTS)
    n_rows = -(-len(rows) // cfg.batch) * cfg.batch
    laid = pack(examples, rows, cfg.seq_len, PACK_SEGMENTS, m.pad_token_id, n_rows=n_rows)
    packed = [{"input_ids": laid["input_ids"][r:r + cfg.batch].astype(np.int64),
               "attention_mask": laid["attention_mask"][r:r + cfg.batch],
               "segment_ids": laid["segment_ids"][r:r + cfg.batch]} for r in range(0, n_rows, cfg.batch)]
    row = laid["slot_of"][:, 0]
    packed_where = np.stack([row // cfg.batch, row % cfg.batch, laid["start_of"], lengths], axis=1)
    return {"padded": padded, "packed": packed, "padded_where": padded_where, "packed_where": packed_where,
            "sentences": n, "real_tokens": int(lengths.sum()),
            "padded_slots": int(sum(b["input_ids"].size for b in padded)), "packed_slots": n_rows * cfg.seq_len}


def per_sentence(hidden: list[np.ndarray], where: np.ndarray) -> list[np.ndarray]:
    """Each sentence's own hidden states [length, D] from the outputs [b, t, D] of a layout's batches, read at its
    `where` row (batch, row, first token, length) of `varlen_set`."""
    return [hidden[k][r, t:t + n] for k, r, t, n in where]


def hf_labels(batch: dict[str, np.ndarray]) -> np.ndarray:
    """HF's MLM labels: the target at predicted positions, -100 (ignored) everywhere else."""
    labels = np.full(batch["input_ids"].shape, -100, np.int64)
    rows, slots = np.nonzero(batch["mlm_weights"] > 0)
    labels[rows, batch["mlm_positions"][rows, slots]] = batch["mlm_targets"][rows, slots]
    return labels


def spec_config(spec: dict[str, Any]) -> BenchConfig:
    """The configuration a worker's spec describes (the parent sends the model as a dict)."""
    return BenchConfig(spec["config"], from_dict(spec["model"]), spec["batch"], spec["seq_len"], (),
                       spec.get("layout", "full"))


# ------------------------------------------------------------------------------------- timing and memory


def versions(names) -> dict[str, str]:
    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "missing"
    return out


def rss_mb() -> dict[str, float]:
    """Current and peak resident memory of this process (VmRSS / VmHWM), in MiB."""
    out = {}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) / 1024
    except OSError:
        out["VmHWM"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"rss_mb": out.get("VmRSS", float("nan")), "peak_rss_mb": out.get("VmHWM", float("nan"))}


def timed_loop(run_one, steps: int, sync) -> float:
    """Mean seconds per call over `steps` back-to-back calls, synchronised once at the end (as a training loop
    runs: JAX dispatches asynchronously, so per-step synchronisation would understate it)."""
    start = time.perf_counter()
    out = None
    for i in range(steps):
        out = run_one(i)
    sync(out)
    return (time.perf_counter() - start) / steps
