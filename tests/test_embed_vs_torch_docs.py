"""docs/benchmarks.md ("Sentence embeddings") and the README quote docs/results/embed_vs_torch.json and
embed_vs_torch_tiny.json (experiments/embed_vs_torch.py) as they were measured: texts/s, ratios, first calls and
the commands."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent


@pytest.mark.parametrize("name, main", [("embed_vs_torch", True), ("embed_vs_torch_tiny", False)])
def test_docs_quote_the_committed_result(name, main):
    result = json.loads((ROOT / "docs" / "results" / f"{name}.json").read_text())
    docs, readme = (ROOT / "docs" / "benchmarks.md").read_text(), (ROOT / "README.md").read_text()
    if main:  # the tiny run's command is described in words
        assert " ".join(result["command"].split()[:-2]) in " ".join(docs.replace("\\\n", " ").split())
    assert result["uptime_before"].split("load average: ")[1].split(",")[0] in docs
    for row in result["rows"]:
        e, fresh = row["embed"], row["fresh_first_call_s"]
        assert f"{e['jax_texts_per_s']:.1f} texts/s" in docs and f"{e['torch_texts_per_s']:.1f} texts/s" in docs
        assert f"{e['jax_over_torch']:.2f}×" in docs and (f"{e['jax_over_torch']:.2f}×" in readme or not main)
        assert f"{e['first_call_s']['jax']:.1f} / {e['first_call_s']['torch']:.1f}" in docs
        assert f"{fresh['no_cache']['jax']:.1f} / {fresh['no_cache']['torch']:.1f}" in docs
        assert f"**{fresh['cache_hit']['jax']:.1f}** / {fresh['cache_hit']['torch']:.1f}" in docs
        assert f"{e['real_tokens']:,} real tokens" in docs
        assert f"{e['padded_positions']['jax']:,} positions" in docs
