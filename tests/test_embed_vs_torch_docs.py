"""docs/benchmarks.md ("Sentence embeddings") and the README quote docs/results/embed_vs_torch.json
(experiments/embed_vs_torch.py) as it was measured: texts/s, ratios, first calls and the command."""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).parent.parent


def test_docs_quote_the_committed_result():
    result = json.loads((ROOT / "docs" / "results" / "embed_vs_torch.json").read_text())
    docs, readme = (ROOT / "docs" / "benchmarks.md").read_text(), (ROOT / "README.md").read_text()
    assert " ".join(result["command"].split()[:-2]) in " ".join(docs.replace("\\\n", " ").split())
    for row in result["rows"]:
        e, fresh = row["embed"], row["fresh_first_call_s"]
        assert f"{e['jax_texts_per_s']:.1f} texts/s" in docs and f"{e['torch_texts_per_s']:.1f} texts/s" in docs
        assert f"{e['jax_over_torch']:.2f}×" in docs and f"{e['jax_over_torch']:.2f}×" in readme
        assert f"{e['first_call_s']['jax']:.1f} / {e['first_call_s']['torch']:.1f}" in docs
        assert f"{fresh['no_cache']['jax']:.1f} / {fresh['no_cache']['torch']:.1f}" in docs
        assert f"**{fresh['cache_hit']['jax']:.1f}** / {fresh['cache_hit']['torch']:.1f}" in docs
        assert f"{e['real_tokens']:,} real tokens" in docs
        assert f"{e['padded_positions']['jax']:,} positions" in docs
