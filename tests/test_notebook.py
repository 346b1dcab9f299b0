"""Executes experiments/notebooks/evaluate.ipynb end to end on a tiny checkpoint so that it never rots."""

import os
import shutil
import sys
from pathlib import Path

import pytest

import tiny_setup  # tests/tiny_setup.py: tiny tokenizer + checkpoint + task builders

ROOT = Path(__file__).parent.parent
NOTEBOOK = ROOT / "experiments" / "notebooks" / "evaluate.ipynb"



def _kernel_spec(tmp: Path) -> str:
    """A kernel spec that runs this interpreter (the venv's), whatever kernels the machine has installed."""
    import json

    kdir = tmp / "kernels" / "xlmjax-test"
    kdir.mkdir(parents=True)
    (kdir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "xlm_jax test", "language": "python",
    }))
    return str(tmp)


@pytest.mark.slow
def test_notebook_runs_end_to_end(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    tiny = tiny_setup
    tok = tiny.make_tokenizer(tmp_path)
    ckpt = tiny.make_checkpoint(tmp_path)
    shutil.copy(tok, ckpt / "tokenizer.model")  # xlm_jax.load finds it there, as in a run directory
    figure = tmp_path / "heatmap.png"
    monkeypatch.setenv("XLMJAX_CHECKPOINT", str(ckpt))
    monkeypatch.delenv("XLMJAX_TOKENIZER", raising=False)
    monkeypatch.setenv("XLMJAX_FIGURE", str(figure))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("JUPYTER_PATH", _kernel_spec(tmp_path) + os.pathsep + os.environ.get("JUPYTER_PATH", ""))
    monkeypatch.setenv("PYTHONPATH", str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="xlmjax-test", resources={"metadata": {"path": str(ROOT)}})
    client.execute()
    outputs = ["".join(o.get("text", "") for o in cell.get("outputs", [])) for cell in nb.cells if cell.cell_type == "code"]
    assert "xlmr: 2 layers, hidden 64" in outputs[0] and "tokenizer.model (62 ids)" in outputs[0]
    assert outputs[1].count("->") == 3  # en, de, fr tokenized
    assert outputs[2].count("top-3") == 6
    assert "(15, 15)" in outputs[3] and figure.stat().st_size > 1000
    table = outputs[4].splitlines()
    assert table[0] == "| src → tgt | P@1 | P@1 (reverse) |" and len(table) == 2 + 3  # en-de, en-fr, de-fr
    assert outputs[5].strip() == "not a fine-tuned checkpoint: no task head"
