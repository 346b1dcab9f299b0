"""`python -m xlm_jax.bench.decode`: translation decoding speed, xlm_jax vs Hugging Face, side by side.

    python -m xlm_jax.bench.decode [--hidden 256] [--layers 3] [--heads 4] [--ffn 1024] [--vocab 8000]
                                   [--batch 16] [--src-len 24] [--max-len 40] [--beam 4] [--repeats 3]
                                   [--threads 1]

One XLM-R-shaped encoder-decoder (`EncoderDecoder`, random weights perturbed away from the initialisation so
that outputs are not degenerate), exported once to Hugging Face `EncoderDecoderModel` (`XLMRobertaModel` +
`XLMRobertaForCausalLM` with cross-attention, `xlm_jax.workflows.convert.export_hf_seq2seq`): both sides compute
the same function, float32, on the same batch of `--batch` random sources of `--src-len` tokens
(`<s> ... </s>`, target language 0). Four sides:
- jax_greedy: `xlm_jax.models.decoding.greedy_decode` (jitted, KV cache, cross-attention K/V computed once);
- hf_greedy: `EncoderDecoderModel.generate(num_beams=1, do_sample=False)` (its KV cache, `torch.no_grad`);
- jax_beam: `beam_search(beam=--beam, length_penalty=1, early_stopping=False)` (XLM's search);
- hf_beam: `generate(num_beams=--beam, length_penalty=1, early_stopping=False)`.
Every side decodes to `--max-len` slots (start token and EOS included). After one untimed call per side (JAX's
compile), the sides alternate `--repeats` times in one process (torch limited to `--threads` threads, XLA's CPU
pool to the same count of pinned CPUs; default 1, see --help); medians are reported. Figures: sentences/s (`--batch` / time) and
tokens/s (generated tokens of the returned best hypotheses, start token excluded, EOS included / time), the mean
generated length, the first call's time, and the share of greedy rows on which both sides wrote the same tokens
(ours ends an unfinished row with EOS at `max_len`, XLM's rule; HF keeps the word: the last slot is not compared).

Bad input (a size below 1, heads not dividing hidden, max_len below 3, more source or target slots than the
model's 512 positions): one `error:` line, exit 2, before anything is built. Nothing is written but stdout.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time

from xlm_jax.core.errors import ArgumentParser, UserError, exit_on_user_error, positive_int

POSITIONS = 512


def add_model_arguments(p) -> None:
    """The model's shape and the source batch (flags shared with `xlm_jax.bench.seq2seq`)."""
    p.add_argument("--hidden", type=positive_int, default=256)
    p.add_argument("--layers", type=positive_int, default=3, help="encoder layers = decoder layers")
    p.add_argument("--heads", type=positive_int, default=4)
    p.add_argument("--ffn", type=positive_int, default=1024)
    p.add_argument("--vocab", type=positive_int, default=8000)
    p.add_argument("--batch", type=positive_int, default=16)
    p.add_argument("--src-len", type=positive_int, default=24, help="source tokens, <s> and </s> included")


def add_run_arguments(p) -> None:
    """The alternation's flags (shared with `xlm_jax.bench.seq2seq`)."""
    p.add_argument("--repeats", type=positive_int, default=3)
    p.add_argument("--threads", type=positive_int, default=1,
                   help="CPU threads per side (default 1: on a shared, loaded machine torch's OpenMP threads spin "
                   "against other processes and slow its small matmuls tens of times)")


def parse_args(argv: list[str] | None = None):
    p = ArgumentParser(prog="python -m xlm_jax.bench.decode", description=__doc__.split("\n\n")[0])
    add_model_arguments(p)
    p.add_argument("--max-len", type=positive_int, default=40, help="decoding slots, start and EOS included")
    p.add_argument("--beam", type=positive_int, default=4)
    add_run_arguments(p)
    return p.parse_args(argv)


def check_length(flag: str, n: int, smallest: str) -> None:
    """UserError unless 3 <= n <= the model's positions (`smallest` says what the 3 slots hold)."""
    if n < 3:
        raise UserError(f"{flag} {n}: must be at least 3 ({smallest})")
    if n > POSITIONS:
        raise UserError(f"{flag} {n}: must be at most the model's {POSITIONS} positions")


def check_model_args(args) -> None:
    """UserError for a model shape or source length the model cannot run (checked before anything is built)."""
    if args.hidden % args.heads:
        raise UserError(f"--heads {args.heads} does not divide --hidden {args.hidden}")
    check_length("--src-len", args.src_len, "<s>, one word, </s>")
    if args.vocab < 6:
        raise UserError(f"--vocab {args.vocab}: must be at least 6 (4 special ids, a word, <mask>)")


def check_args(args) -> None:
    """UserError for settings the model cannot run (checked before anything is built)."""
    check_model_args(args)
    check_length("--max-len", args.max_len, "start token, one word, EOS")


def check_and_pin(args, check) -> None:
    """`check(args)` and the thread count (bad input: one `error:` line, exit 2), then this process pinned to
    `args.threads` CPUs, so that both frameworks run on the same ones: XLA sizes its pool from the affinity mask."""
    with exit_on_user_error():
        check(args)
        available = len(os.sched_getaffinity(0))
        if args.threads > available:
            raise UserError(f"--threads {args.threads}: this process may use {available} CPUs")
    os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:args.threads])


def build_models(args):
    """-> (EncoderDecoderConfig, EncoderDecoder, params, HF EncoderDecoderModel in eval mode): one XLM-R-shaped
    model of `args`' shape (float32, dropout 0), random weights perturbed away from the initialisation so that
    outputs are not degenerate, exported once to HF (sdpa attention); torch limited to `args.threads` threads."""
    # Deferred: jax starts its backend and torch is heavy; both only once the arguments are checked.
    import jax
    import numpy as np
    import torch
    import transformers
    import flax.linen as nn

    from xlm_jax.models.config import encoder_decoder_config, get_model_config
    from xlm_jax.models.decoder import EncoderDecoder, init_params
    from xlm_jax.workflows.convert import export_hf_seq2seq

    torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()  # the encoder's unused pooler is reported missing; it is never run
    transformers.utils.logging.disable_progress_bar()
    enc = get_model_config("xlmr_tiny", vocab_size=args.vocab, hidden_size=args.hidden, num_layers=args.layers,
                           num_heads=args.heads, intermediate_size=args.ffn, max_positions=POSITIONS,
                           dropout=0.0, attention_dropout=0.0, dtype="float32")
    cfg = encoder_decoder_config(enc)
    model = EncoderDecoder(cfg)
    params = nn.unbox(init_params(model, jax.random.key(0)))
    leaves, tree = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.key(1), len(leaves))
    params = jax.tree_util.tree_unflatten(
        tree, [x + 0.05 * jax.random.normal(k, x.shape, x.dtype) for x, k in zip(leaves, keys)])
    with tempfile.TemporaryDirectory() as tmp:
        export_hf_seq2seq(jax.tree_util.tree_map(np.asarray, params), cfg, tmp)
        hf = transformers.EncoderDecoderModel.from_pretrained(tmp, attn_implementation="sdpa").eval()
    return cfg, model, params, hf


def alternate(sides: dict, repeats: int, first: dict | None = None) -> tuple[dict, dict, dict]:
    """Every side's first call alone (`first[name]()`, default `sides[name]()`; JAX compiles there), then
    `repeats` rounds calling the sides of `sides` in turn, in this process.

    -> (seconds of the first call per side, the `repeats` seconds per side, the first call's output per side)."""
    first = first or sides
    first_s, times, outputs = {}, {name: [] for name in sides}, {}
    for name in sides:
        start = time.perf_counter()
        outputs[name] = first[name]()
        first_s[name] = time.perf_counter() - start
    for _ in range(repeats):
        for name, fn in sides.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return first_s, times, outputs


def run(args) -> dict:
    """The measurement (see the module docstring) -> {side: figures} plus 'agreement'."""
    # Deferred: jax starts its backend and torch is heavy; both only once the arguments are checked.
    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch

    from xlm_jax.models.decoding import beam_search, greedy_decode

    cfg, model, params, hf = build_models(args)

    rng = np.random.default_rng(0)
    src = rng.integers(5, args.vocab - 1, (args.batch, args.src_len)).astype(np.int32)
    src[:, 0], src[:, -1] = cfg.encoder.bos_token_id, cfg.encoder.eos_token_id
    mask = np.ones_like(src)
    tgt_langs = np.zeros(args.batch, np.int32)
    j_src, j_mask, j_tgt = jnp.asarray(src), jnp.asarray(mask), jnp.asarray(tgt_langs)
    t_src, t_mask = torch.tensor(src, dtype=torch.long), torch.tensor(mask, dtype=torch.long)
    pad, eos = cfg.decoder.pad_token_id, cfg.decoder.eos_token_id

    def jax_greedy():
        tokens, lengths = greedy_decode(model, params, j_src, j_mask, None, j_tgt, max_len=args.max_len)
        return np.asarray(jax.block_until_ready(tokens)), np.asarray(lengths) - 1

    def jax_beam():
        out = beam_search(model, params, j_src, j_mask, None, j_tgt, max_len=args.max_len, beam=args.beam,
                          length_penalty=1.0, early_stopping=False)
        return np.asarray(jax.block_until_ready(out.tokens)), np.asarray(out.lengths) - 1

    def hf_generate(beams):
        def go():
            with torch.no_grad():
                out = hf.generate(input_ids=t_src, attention_mask=t_mask, max_length=args.max_len, num_beams=beams,
                                  do_sample=False, length_penalty=1.0, early_stopping=False,
                                  decoder_start_token_id=cfg.decoder.bos_token_id, pad_token_id=pad,
                                  eos_token_id=eos).numpy()
            generated = out[:, 1:]
            # Tokens up to and including the first EOS (HF pads finished rows).
            lengths = np.array([(list(r).index(eos) + 1) if eos in r else int((r != pad).sum()) for r in generated])
            return out, lengths
        return go

    sides = {"jax_greedy": jax_greedy, "hf_greedy": hf_generate(1), "jax_beam": jax_beam,
             "hf_beam": hf_generate(args.beam)}
    first, times, returned = alternate(sides, args.repeats)
    outputs = {name: out for name, (out, _) in returned.items()}
    lengths = {name: n for name, (_, n) in returned.items()}
    ours, theirs = outputs["jax_greedy"], outputs["hf_greedy"]
    compare = min(args.max_len - 1, theirs.shape[1])
    theirs = np.pad(theirs, ((0, 0), (0, args.max_len - theirs.shape[1])), constant_values=pad)
    agree = float(np.mean([(o[:compare] == t[:compare]).all() for o, t in zip(ours, theirs)]))
    result = {}
    for name in sides:
        t = statistics.median(times[name])
        result[name] = dict(seconds=t, sentences_per_s=args.batch / t, tokens_per_s=float(lengths[name].sum()) / t,
                            mean_length=float(lengths[name].mean()), first_call_s=first[name])
    result["agreement"] = agree
    return result


def format_table(args, result: dict) -> str:
    lines = ["| side | sentences/s | tokens/s | s per batch | mean generated length | first call (s) |",
             "|---|---|---|---|---|---|"]
    for name in ("jax_greedy", "hf_greedy", "jax_beam", "hf_beam"):
        r = result[name]
        lines.append(f"| {name} | {r['sentences_per_s']:.1f} | {r['tokens_per_s']:.0f} | {r['seconds']:.3f} | "
                     f"{r['mean_length']:.1f} | {r['first_call_s']:.1f} |")
    g = result["jax_greedy"]["sentences_per_s"] / result["hf_greedy"]["sentences_per_s"]
    b = result["jax_beam"]["sentences_per_s"] / result["hf_beam"]["sentences_per_s"]
    lines.append("")
    lines.append(f"ratio jax / hf (sentences/s): greedy {g:.2f}x, beam {args.beam} {b:.2f}x; greedy rows "
                 f"identical on both sides: {result['agreement']:.0%}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    check_and_pin(args, check_args)
    print(f"decoding bench: hidden {args.hidden}, {args.layers}+{args.layers} layers, {args.heads} heads, ffn "
          f"{args.ffn}, vocab {args.vocab}; batch {args.batch} x {args.src_len} source tokens, max_len "
          f"{args.max_len}, beam {args.beam}, {args.repeats} alternating repeats, threads {args.threads}",
          file=sys.stderr)
    result = run(args)
    print(format_table(args, result))


if __name__ == "__main__":
    main()
