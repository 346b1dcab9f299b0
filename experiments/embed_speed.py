"""Sentences per second of `LoadedModel.embed` on the CPU (docs/notebook.md), written as JSON.

    python experiments/embed_speed.py [--sentences 512] [--out docs/results/embed_speed.json]

Random-weight models (the speed does not depend on the weights) with a tiny SentencePiece model trained on the
spot (tests/tiny_setup.py's en/de/fr words), sentences of 3-40 words. For each model it reports: the first
`embed` call over all sentences (compilation included), the same call again (every shape compiled: the steady
state of a notebook loop), and one sentence per call (a loop over single texts: its first pass compiles the single-row widths, its
second pass is steady).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

MODELS = {  # name -> get_model_config(base, **overrides)
    "xlmr_tiny (2 x 64)": ("xlmr_tiny", {}),
    "xlmr 4 x 256": ("xlmr_tiny", {"hidden_size": 256, "num_layers": 4, "intermediate_size": 1024}),
}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sentences", type=int, default=512)
    parser.add_argument("--single", type=int, default=64, help="sentences for the one-per-call loop")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)

    import flax.linen as nn
    import jax

    import tiny_setup
    from xlm_jax.api import LoadedModel
    from xlm_jax.models.config import get_model_config
    from xlm_jax.models.xlm import XLMForMaskedLM, init_params
    from xlm_jax.data.tokenizer import Tokenizer

    rng = random.Random(0)
    words = [w for ws in tiny_setup.WORDS.values() for w in ws]
    texts = [" ".join(rng.choice(words) for _ in range(rng.randint(3, 40))) for _ in range(args.sentences)]
    with tempfile.TemporaryDirectory() as tmp:
        tok = Tokenizer.load(tiny_setup.make_tokenizer(Path(tmp)))
    rows = []
    for label, (base, overrides) in MODELS.items():
        cfg = get_model_config(base, **overrides)
        params = nn.unbox(jax.jit(lambda key: init_params(XLMForMaskedLM(cfg), key))(jax.random.key(0)))
        m = LoadedModel(cfg, params, tok)
        t0 = time.perf_counter()
        m.embed(texts)
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        m.embed(texts)
        again = time.perf_counter() - t0
        t0 = time.perf_counter()
        for t in texts[: args.single]:
            m.embed(t)
        single_first = time.perf_counter() - t0  # compiles the single-row shapes on the way
        t0 = time.perf_counter()
        for t in texts[: args.single]:
            m.embed(t)
        single = time.perf_counter() - t0
        row = {"model": label, "params": cfg.num_params(), "sentences": len(texts),
               "first_call_s": round(first, 2), "first_call_sent_per_s": round(len(texts) / first, 1),
               "steady_sent_per_s": round(len(texts) / again, 1),
               "one_per_call_first_loop_sent_per_s": round(args.single / single_first, 1),
               "one_per_call_sent_per_s": round(args.single / single, 1), "compiled_shapes": m.compiled_shapes()}
        rows.append(row)
        print(json.dumps(row))
    result = {"command": "python experiments/embed_speed.py " + " ".join(argv or sys.argv[1:]),
              "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs visible",
              "jax": jax.__version__, "backend": jax.default_backend(), "rows": rows}
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
