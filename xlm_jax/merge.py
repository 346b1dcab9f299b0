"""Checkpoint merging: `python -m xlm_jax.merge OUT CKPT1 CKPT2 ... [--method average|ties] [--density 0.2]
[--base CKPT] [--scale 1.0] [--weights W1 W2 ...] [--force]`.

`average` (default): θ = Σ w_i θ_i / Σ w_i. `ties`: TIES merging (Yadav et al. 2023) of the task vectors
θ_i − θ_base, each trimmed to its top --density share by magnitude, signs elected, agreeing entries averaged,
added to the base times --scale (mmBERT merges its decay-phase variants this way); the formula is in
`xlm_jax.training.merging`. CKPT: anything `python -m xlm_jax.convert` reads (our checkpoints, run and fine-tuning
outputs, Hugging Face directories, fairseq / XLM pickles). OUT gets our checkpoint format (`OUT/0/...`), the first
checkpoint's tokenizer files (and task.json for a fine-tuned head) and merge.json; it must be new, empty or an
earlier output of merge, else --force. Bad input (fewer than two checkpoints, TIES without --base, --density
outside (0, 1], checkpoints of other architectures or vocabularies) prints one `error:` line and exits 2 with
nothing written. The library is `xlm_jax.workflows.merge`.
"""

from __future__ import annotations

from xlm_jax.core.errors import ArgumentParser, arg_range, exit_on_user_error
from xlm_jax.training.merging import METHODS
from xlm_jax.workflows.merge import merge


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(prog="python -m xlm_jax.merge",
                            description="Merge checkpoints of one architecture: plain averaging or TIES merging.")
    parser.add_argument("out", help="output directory: new, empty, or an earlier output of merge (replaced)")
    parser.add_argument("checkpoints", nargs="*", help="two or more checkpoints (anything convert reads)")
    parser.add_argument("--method", choices=METHODS, default="average")
    parser.add_argument("--density", type=float, default=None,
                        help="ties: share of each task vector's entries kept, in (0, 1] (default 0.2)")
    parser.add_argument("--base", default=None, help="ties: the checkpoint the task vectors are taken from")
    parser.add_argument("--scale", type=float, default=None, help="ties: λ, the merged task vector's scale (1.0)")
    parser.add_argument("--weights", type=arg_range(0, low_open=True, integer=False), nargs="+", default=None,
                        help="one positive weight per checkpoint (default: equal)")
    parser.add_argument("--force", action="store_true", help="write into OUT even if it holds other files")
    args = parser.parse_args(argv)
    with exit_on_user_error():
        line = merge(args.out, args.checkpoints, method=args.method, density=args.density, base=args.base,
                     weights=args.weights, scale=args.scale, force=args.force)
    print(line)


if __name__ == "__main__":
    main()
