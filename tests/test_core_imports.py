"""README: "The core never imports TensorFlow or PyTorch", and a core install (`pip install -e .`) runs every
command. Checked in a fresh interpreter (the test process has torch loaded by other tests) in which every installed
package outside the core dependencies' closure (read from xlm_jax's installed metadata, extras left out) cannot be
imported: every xlm_jax module is imported, then the core's own lazy imports are exercised (metrics + TensorBoard
events, the plot, seqeval's entity F1, orbax checkpoints, safetensors, SentencePiece), and neither framework may
show up in sys.modules, although both torch and transformers are installed with the test extras.

Left out by design, because they exist to talk to the other frameworks: `convert`'s reading of PyTorch pickles
(`torch_load`, and bf16 safetensors), `bench`'s PyTorch worker, and the tensorflow-datasets readers
(`data.tfds_source`, `tasks`' tfds path). Importing their modules is still checked.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FRAMEWORKS = ("torch", "tensorflow", "tensorflow_datasets", "transformers", "keras")

SCRIPT = r"""
import importlib, importlib.metadata as md, importlib.util, json, pkgutil, re, sys, tempfile
from pathlib import Path


def _norm(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def core_closure():
    # xlm_jax's own requirements without extras, and theirs, recursively (markers other than extras kept: an
    # over-approximation that can only let more through).
    todo, seen = ["xlm_jax"], set()
    while todo:
        dist = _norm(todo.pop())
        if dist in seen:
            continue
        seen.add(dist)
        try:
            reqs = md.distribution(dist).requires or []
        except md.PackageNotFoundError:
            continue
        for req in reqs:
            if "extra ==" in req.partition(";")[2]:
                continue
            todo.append(re.split(r"[\s;<>=!~\[(]", req, maxsplit=1)[0])
    return seen


allowed = core_closure()
blocked = {top for top, dists in md.packages_distributions().items()
           if top not in sys.stdlib_module_names and not any(_norm(d) in allowed for d in dists)}


class NotACoreDependency:
    # Stands in for every finder, so that a blocked package is not found at all, as on a core install: an import
    # raises ModuleNotFoundError and a probe (`importlib.util.find_spec("tensorflow")`, which etils' epath makes
    # under orbax) answers None instead of raising.
    def __init__(self, finders):
        self.finders = finders

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in blocked:
            return None
        for finder in self.finders:
            spec = finder.find_spec(name, path, target) if hasattr(finder, "find_spec") else None
            if spec is not None:
                return spec
        return None

    def invalidate_caches(self):
        for finder in self.finders:
            getattr(finder, "invalidate_caches", lambda: None)()


sys.meta_path[:] = [NotACoreDependency(list(sys.meta_path))]
assert importlib.util.find_spec("torch") is None
assert "torch" in blocked and "transformers" in blocked and "seqeval" not in blocked, sorted(blocked)[:50]

import numpy as np

import xlm_jax

modules = [m.name for m in pkgutil.walk_packages(xlm_jax.__path__, "xlm_jax.")]
for name in modules:
    importlib.import_module(name)

tmp = Path(tempfile.mkdtemp())
from xlm_jax.training.metrics import MetricsWriter
from xlm_jax.plot import plot_run
writer = MetricsWriter(tmp / "run")
for step in (1, 2):
    writer.write(step, "train", {"loss": 3.0 - step, "tokens_per_s": 10.0})
writer.close()
plot_run(tmp / "run")

from xlm_jax.tasks.ner import entity_scores
entity_scores([["B-PER", "O"]], [["B-PER", "O"]])

from xlm_jax.workflows import convert
from xlm_jax.training import checkpoint
from xlm_jax.models.config import get_model_config
checkpoint.save_params(tmp / "ckpt", {"w": np.ones((2, 3), np.float32)}, get_model_config("xlmr_tiny"))
checkpoint.restore_params(tmp / "ckpt")
from safetensors.numpy import save_file
save_file({"a": np.zeros(3, np.float32)}, str(tmp / "m.safetensors"))
convert._read_safetensors(tmp / "m.safetensors")

sys.path.insert(0, "tests")
import tiny_setup
from xlm_jax.data.tokenizer import Tokenizer
Tokenizer.load(str(tiny_setup.make_tokenizer(tmp))).encode_batch_pieces_ids(["the cat"])  # trains one first

print(json.dumps({"modules": len(modules), "loaded": sorted({m.split(".")[0] for m in sys.modules}),
                  "blocked": sorted(blocked)}))
"""


def test_the_core_imports_neither_pytorch_nor_tensorflow():
    proc = subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "pytest" in report["blocked"]  # the blocker saw the test extras
    assert report["modules"] >= 25
    assert [m for m in FRAMEWORKS if m in report["loaded"]] == []
