"""How much host batch-building time prefetching hides (issue 24): the default config's model and batch (a short
device step) trained on a synthetic corpus twice in one process, train.prefetch=0 (each batch built between steps)
then train.prefetch=2 (built in a thread while the previous step runs), and the time the loop spent waiting in
`Prefetcher.get` each way (with prefetch 0 that is the whole build time) plus the run's wall time.

    python experiments/prefetch_wait.py [--steps 200] [--order 0,2,0,2] [key=value ...]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from xlm_jax.data.__main__ import write_synthetic  # noqa: E402
from xlm_jax.data.prefetch import Prefetcher  # noqa: E402
from xlm_jax.pretrain import loop  # noqa: E402
from xlm_jax.pretrain.config import load_config  # noqa: E402

SEEN: list[Prefetcher] = []


class Recording(Prefetcher):
    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        SEEN.append(self)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--order", default="0,2,0,2", help="train.prefetch values, run back to back")
    p.add_argument("overrides", nargs="*", help="more config overrides (key=value), e.g. a smaller model")
    args = p.parse_args()
    loop.Prefetcher = Recording  # the loop's own class, recording its instances
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus"
        write_synthetic(corpus, n_langs=3, n_tokens=200_000, n_pairs=2, vocab_size=2000, seed=0)
        for i, depth in enumerate(int(x) for x in args.order.split(",")):
            cfg = load_config(None, [f"data.dir={corpus}", f"run_dir={tmp}/run{i}", f"train.steps={args.steps}",
                                     "train.eval_every=0", "train.eval_batches=1", "train.progress=false",
                                     f"train.log_every={args.steps}", f"checkpoint.every={args.steps}",
                                     f"train.prefetch={depth}", *args.overrides])
            t0 = time.perf_counter()
            assert loop.train(cfg, force=True) == 0
            wall = time.perf_counter() - t0
            f = SEEN[-1]
            print(f"train.prefetch={depth}: {f.gets} steps, waited {f.waited_s:.3f} s for batches "
                  f"({f.waited_s / f.gets * 1e3:.2f} ms/step), built {f.built_s:.3f} s "
                  f"({f.built_s / f.gets * 1e3:.2f} ms/step), run wall {wall:.1f} s", flush=True)


if __name__ == "__main__":
    main()
