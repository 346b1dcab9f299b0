"""The host batch throughput tables of docs/data.md, measured in one go and written as JSON.

    taskset -c 0 python experiments/data_throughput.py WORK_DIR --real PREPROCESSED_DIR --out docs/results/data_throughput.json

Writes a synthetic corpus (`python -m xlm_jax.data synth WORK_DIR/synth --langs 10 --tokens 2000000
--para-pairs 3`) unless it is already there, then runs `python -m xlm_jax.data bench` for each row of the tables
(in-process, one after another, 500 batches each) on it and on `--real` (a preprocessed directory of real text,
e.g. the gettext experiment's `WORK/preprocessed` from experiments/zero_shot_gettext.py). Pin it to one core with
taskset for per-core figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SYNTH_ROWS = [  # (label, bench flags)
    ("mlm, T=256, B=64", []),
    ("mlm, T=256, B=64, --sample-alpha 0.5 (ceil count)", ["--sample-alpha", "0.5"]),
    ("tlm fixed, T=256, B=64", ["--objective", "tlm"]),
    ("tlm fixed, --tlm-seq-len 128", ["--objective", "tlm", "--tlm-seq-len", "128"]),
    ("tlm tokens, --tlm-tokens-per-batch 16384", ["--objective", "tlm", "--tlm-tokens-per-batch", "16384"]),
    ("clm, T=256, B=64", ["--objective", "clm"]),
]
REAL_ROWS = [("mlm", []), ("tlm fixed, T=256", ["--objective", "tlm"])]


def main() -> None:
    from xlm_jax.data.__main__ import main as data_main

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("work")
    parser.add_argument("--real", required=True, help="a preprocessed directory of real text")
    parser.add_argument("--out", required=True)
    parser.add_argument("--steps", type=int, default=500)
    args = parser.parse_args()
    synth = Path(args.work) / "synth"
    if not (synth / "manifest.json").is_file():
        data_main(["synth", str(synth), "--langs", "10", "--tokens", "2000000", "--para-pairs", "3"])
    results = []
    for corpus, rows in ((synth, SYNTH_ROWS), (Path(args.real), REAL_ROWS)):
        for label, flags in rows:
            argv = [sys.executable, "-m", "xlm_jax.data", "bench", str(corpus), "--seq-len", "256",
                    "--batch-size", "64", "--steps", str(args.steps), *flags]
            line = subprocess.run(argv, capture_output=True, text=True, check=True, cwd=ROOT,
                                  env={**os.environ, "PYTHONPATH": str(ROOT)}).stdout.strip().splitlines()[-1]
            results.append({"corpus": "synthetic" if corpus == synth else str(corpus), "row": label,
                            "command": " ".join(["python -m xlm_jax.data bench", corpus.name, *argv[5:]]),
                            **json.loads(line)})
            r = results[-1]
            print(f"{r['corpus'][:20]:<20} {label:<50} {r['ms_per_batch']:>7.2f} ms  "
                  f"{r['tokens_per_s'] / 1e6:5.1f} M  {r['real_tokens_per_s'] / 1e6:5.1f} M", flush=True)
    report = {"command": "python experiments/data_throughput.py " + " ".join(sys.argv[1:]),
              "cpu_affinity": sorted(os.sched_getaffinity(0)), "machine": platform.processor() or platform.machine(),
              "load_average": os.getloadavg(), "results": results}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
