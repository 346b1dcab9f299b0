"""The README's notebook example runs as written (on a tiny run directory laid out as training leaves it)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import tiny_setup

README = Path(__file__).parent.parent / "README.md"


def test_readme_notebook_example_runs(tmp_path, monkeypatch, capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    example = next(b for b in blocks if "xlm_jax.load(" in b)
    run_dir = tmp_path / "runs" / "default"
    (run_dir / "checkpoints").mkdir(parents=True)
    tiny_setup.make_checkpoint(run_dir / "checkpoints")  # -> checkpoints/xlmr_tiny/0
    shutil.move(run_dir / "checkpoints" / "xlmr_tiny" / "0", run_dir / "checkpoints" / "0")
    shutil.copy(tiny_setup.make_tokenizer(tmp_path), run_dir / "tokenizer.model")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(example, str(README), "exec"), namespace)
    assert namespace["states"].shape[:2] == namespace["batch"]["input_ids"].shape
    assert namespace["logits"].shape[-1] == namespace["m"].config.vocab_size
    assert "total" in capsys.readouterr().out
