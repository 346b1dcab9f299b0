"""`python -m xlm_jax.bench.seq2seq`: the encoder–decoder's training step, xlm_jax vs Hugging Face, side by side.

    python -m xlm_jax.bench.seq2seq [--hidden 256] [--layers 3] [--heads 4] [--ffn 1024] [--vocab 8000]
                                    [--batch 16] [--src-len 24] [--tgt-len 24] [--steps 5] [--repeats 3]
                                    [--threads 1] [--breakdown]

The model is `xlm_jax.bench.decode`'s (`build_models`: one XLM-R-shaped `EncoderDecoder`, float32, dropout 0,
exported once to HF `EncoderDecoderModel` = `XLMRobertaModel` + `XLMRobertaForCausalLM` with cross-attention,
sdpa attention), so both sides start from the same weights. The batch, the same on both sides: `--batch`
sentence pairs of random word ids, `<s> w1 .. wn </s>`, n drawn uniformly between about half and all of the
`--src-len` / `--tgt-len` slots (padding after), built by train_mt's own `xlm_jax.mt.data.pad_rows` /
`update_batch` (target language 0). Two sides, each doing one supervised-MT update per step:
- jax: train_mt's update (`xlm_jax.mt.loop`): `make_step(seq2seq_loss(model), make_optimizer(...))`, jitted, the
  state donated; the loss is the mean token cross-entropy over the predicted target tokens (the decoder reads
  tgt[:, :-1] and predicts tgt[:, 1:]); train_mt's default optimizer (`MTConfig().optimizer`: XLM's
  adam_inverse_sqrt, betas 0.9 / 0.98, eps 1e-6, no weight decay, global-norm clip 5, lr from 1e-7 warming up to
  1e-3 over 100 updates);
- hf: `EncoderDecoderModel(input_ids, attention_mask, decoder_input_ids=tgt[:, :-1], decoder_attention_mask,
  labels, use_cache=False)` in train mode (its own loss: `CrossEntropyLoss` over the labels that are not -100,
  i.e. the same mean over the predicted target tokens), `backward`, `clip_grad_norm_(5)`, `torch.optim.Adam`
  (fused) with the same betas, eps and, update by update, the same learning rate (`make_schedule`'s values).
After one untimed step per side (JAX's compile; its loss is the first-step loss, which both sides compute from the
same weights on the same batch, so they must agree to ~1e-4), the sides alternate `--repeats` times, `--steps`
updates each, in one process (torch limited to `--threads` threads, XLA's CPU pool to the same count of pinned
CPUs; default 1, see --help); each side's state carries on from update to update. Figures: s per step (median over
the repeats of a repeat's time / `--steps`), target tokens/s (the predicted target tokens of the batch / s per
step), source + target tokens/s (those plus the real source tokens the encoder reads), the first step's time and
loss, and the last step's loss (after 1 + steps x repeats updates on both sides). With --breakdown, then the
forward alone and the forward + backward alone, timed the same way (`breakdown`).

Bad input (a size below 1, heads not dividing hidden, a source or target length below 3 or above the model's 512
positions): one `error:` line, exit 2, before anything is built. Nothing is written but stdout.
"""

from __future__ import annotations

import functools
import statistics
import sys
import warnings

from xlm_jax.bench.decode import (add_model_arguments, add_run_arguments, alternate, build_models, check_and_pin,
                                  check_length, check_model_args)
from xlm_jax.core.errors import ArgumentParser, positive_int
from xlm_jax.mt.config import MTConfig

SIDES = ("jax", "hf")


def parse_args(argv: list[str] | None = None):
    p = ArgumentParser(prog="python -m xlm_jax.bench.seq2seq", description=__doc__.split("\n\n")[0])
    add_model_arguments(p)
    p.add_argument("--tgt-len", type=positive_int, default=24, help="target slots, <s> and </s> included")
    p.add_argument("--steps", type=positive_int, default=5, help="updates per side per repeat")
    p.add_argument("--breakdown", action="store_true",
                   help="then time the forward (loss, no gradient) and the forward + backward alone, alternating too")
    add_run_arguments(p)
    return p.parse_args(argv)


def check_args(args) -> None:
    """UserError for settings the model cannot run (checked before anything is built)."""
    check_model_args(args)
    check_length("--tgt-len", args.tgt_len, "<s>, one word, </s>")


def make_batch(args, cfg):
    """The host batch of `xlm_jax.training.seq2seq.seq2seq_loss` (see the module docstring), seeded with 0."""
    import numpy as np  # deferred with the rest of the work, after the arguments are checked

    from xlm_jax.models.decoding import start_token
    from xlm_jax.mt import data as mtdata

    rng = np.random.default_rng(0)
    enc = cfg.encoder
    rows = np.arange(args.batch)

    def side(width):
        words = width - 2
        lengths = rng.integers(max(1, words // 2), words + 1, args.batch)
        sentences = [rng.integers(5, args.vocab - 1, n) for n in lengths]
        return mtdata.pad_rows(sentences, rows, width, start_token(enc), enc.eos_token_id, enc.pad_token_id)

    src, src_mask = side(args.src_len)
    tgt, tgt_mask = side(args.tgt_len)
    return mtdata.update_batch(src, src_mask, 0, tgt, tgt_mask, 0, 1.0)


def run(args) -> dict:
    """The measurement (see the module docstring) -> {side: figures} plus 'first_loss_diff' (|jax - hf|)."""
    # Deferred: jax starts its backend and torch is heavy; both only once the arguments are checked.
    import jax
    import numpy as np
    import torch

    from xlm_jax.training.optim import make_optimizer, make_schedule
    from xlm_jax.training.seq2seq import mt_state_shardings, place_state, seq2seq_loss
    from xlm_jax.training.sharding import MeshConfig, global_batch, make_mesh
    from xlm_jax.training.step import make_step

    cfg, model, params, hf = build_models(args)
    batch = make_batch(args, cfg)
    predicted = int(batch["tgt_mask"][:, 1:].sum())
    read = predicted + int(batch["src_mask"].sum())
    updates = 1 + args.steps * args.repeats
    opt = MTConfig().optimizer

    # jax: train_mt's set-up (xlm_jax.mt.loop.train_mt) on a one-device mesh.
    optimizer = make_optimizer(opt, updates)
    mesh = make_mesh(MeshConfig())
    _, shardings = mt_state_shardings(cfg, optimizer, mesh)
    train_step = make_step(seq2seq_loss(model), optimizer, mesh, shardings)
    state = place_state(params, optimizer, shardings, mesh)
    j_batch = global_batch(mesh, batch)
    rng = jax.random.key(0)

    def jax_steps(n):
        nonlocal state
        losses = []
        for _ in range(n):
            state, metrics = train_step(state, j_batch, rng)
            losses.append(metrics["loss"])
        return [float(x) for x in losses]  # waits for the last update

    # hf: the same update in PyTorch, as a user of EncoderDecoderModel writes it.
    if opt.weight_decay:
        raise ValueError("the PyTorch side has no weight-decay mask; train_mt's default optimizer has no decay")
    lrs = np.asarray(make_schedule(opt, updates)(np.arange(updates)), np.float64)
    # EncoderDecoderModel warns on every call with labels that its loss moved out of the decoder in v4.12.
    warnings.filterwarnings("ignore", message="Version v4.12.0 introduces", category=FutureWarning)
    hf.train()
    t_opt = torch.optim.Adam(hf.parameters(), lr=float(lrs[0]), betas=(opt.b1, opt.b2), eps=opt.eps, fused=True)
    long = {k: torch.from_numpy(batch[k].astype(np.int64)) for k in ("src", "src_mask", "tgt", "tgt_mask")}
    labels = torch.where(long["tgt_mask"][:, 1:] > 0, long["tgt"][:, 1:], -100)
    inputs = dict(input_ids=long["src"], attention_mask=long["src_mask"], decoder_input_ids=long["tgt"][:, :-1],
                  decoder_attention_mask=long["tgt_mask"][:, :-1], labels=labels, use_cache=False)
    done = 0

    def hf_steps(n):
        nonlocal done
        losses = []
        for _ in range(n):
            loss = hf(**inputs).loss
            loss.backward()
            if opt.clip_norm > 0:
                torch.nn.utils.clip_grad_norm_(hf.parameters(), opt.clip_norm)
            for group in t_opt.param_groups:
                group["lr"] = float(lrs[done])
            t_opt.step()
            t_opt.zero_grad(set_to_none=True)
            done += 1
            losses.append(loss.detach())
        return [float(x) for x in losses]

    steps, last = {"jax": jax_steps, "hf": hf_steps}, {}

    def block(name):
        def go():
            last[name] = steps[name](args.steps)
        return go

    first, times, first_losses = alternate({name: block(name) for name in SIDES}, args.repeats,
                                           first={name: functools.partial(steps[name], 1) for name in SIDES})
    result = {}
    for name in SIDES:
        step_s = statistics.median(times[name]) / args.steps
        result[name] = dict(step_s=step_s, target_tokens_per_s=predicted / step_s, tokens_per_s=read / step_s,
                            first_step_s=first[name], first_loss=first_losses[name][0], last_loss=last[name][-1])
    if args.breakdown:
        result["breakdown"] = breakdown(args, model, state["params"], j_batch, rng, hf, inputs, t_opt)
    result["first_loss_diff"] = abs(result["jax"]["first_loss"] - result["hf"]["first_loss"])
    result["target_tokens"], result["tokens"], result["updates"] = predicted, read, updates
    return result


def breakdown(args, model, params, batch, rng, hf, inputs, t_opt) -> dict:
    """{part: {side: s per call}} for the parts of a step: "forward" (the loss, no gradient: jitted `seq2seq_loss`
    / `torch.no_grad`) and "forward_backward" (the gradients, no update: `jax.grad` of the same loss, jitted /
    `loss.backward()`), alternating as the steps do, after one untimed call each; the rest of a step (clipping, Adam,
    and on the JAX side the donated state's bookkeeping) is the step's time minus forward_backward."""
    import jax  # deferred as in `run`
    import torch

    from xlm_jax.training.seq2seq import seq2seq_loss

    loss = seq2seq_loss(model)
    totals = loss.totals(batch)
    j_forward = jax.jit(lambda p, b: loss.fn(p, b, rng, totals)[0])
    j_grad = jax.jit(lambda p, b: jax.grad(loss.fn, has_aux=True)(p, b, rng, totals)[0])

    def hf_forward():
        with torch.no_grad():
            return hf(**inputs).loss

    def hf_forward_backward():
        hf(**inputs).loss.backward()
        t_opt.zero_grad(set_to_none=True)

    parts = {"jax_forward": lambda: jax.block_until_ready(j_forward(params, batch)), "hf_forward": hf_forward,
             "jax_forward_backward": lambda: jax.block_until_ready(j_grad(params, batch)),
             "hf_forward_backward": hf_forward_backward}

    def block(fn):
        return lambda: [fn() for _ in range(args.steps)]

    _, times, _ = alternate({name: block(fn) for name, fn in parts.items()}, args.repeats, first=parts)
    out: dict = {}
    for name, t in times.items():
        side, part = name.split("_", 1)
        out.setdefault(part, {})[side] = statistics.median(t) / args.steps
    return out


def format_table(args, result: dict) -> str:
    lines = ["| side | target tokens/s | source + target tokens/s | s per step | first step (s) | first-step loss | "
             "last loss |", "|---|---|---|---|---|---|---|"]
    for name in SIDES:
        r = result[name]
        lines.append(f"| {name} | {r['target_tokens_per_s']:.0f} | {r['tokens_per_s']:.0f} | {r['step_s']:.4f} | "
                     f"{r['first_step_s']:.1f} | {r['first_loss']:.6f} | {r['last_loss']:.6f} |")
    ratio = result["hf"]["step_s"] / result["jax"]["step_s"]
    lines.append("")
    lines.append(f"ratio jax / hf (tokens/s): {ratio:.2f}x; first-step losses differ by {result['first_loss_diff']:.1e}; "
                 f"{result['target_tokens']} target + {result['tokens'] - result['target_tokens']} source tokens per "
                 f"step; last loss after {result['updates']} updates per side")
    if "breakdown" in result:
        b = result["breakdown"]
        for name in SIDES:
            step = result[name]["step_s"]
            rest = step - b["forward_backward"][name]
            lines.append(f"breakdown {name} (s per call): forward {b['forward'][name]:.4f}, forward + backward "
                         f"{b['forward_backward'][name]:.4f}, the rest of the step (clip, Adam) {rest:.4f} of "
                         f"{step:.4f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    check_and_pin(args, check_args)
    print(f"seq2seq training bench: hidden {args.hidden}, {args.layers}+{args.layers} layers, {args.heads} heads, "
          f"ffn {args.ffn}, vocab {args.vocab}; batch {args.batch} x {args.src_len} source / {args.tgt_len} target "
          f"slots, {args.steps} steps x {args.repeats} alternating repeats, threads {args.threads}", file=sys.stderr)
    print(format_table(args, run(args)))


if __name__ == "__main__":
    main()
