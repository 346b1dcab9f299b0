"""`python -m xlm_jax.bench.decode`: a seconds-long run on a tiny model (both sides decode the same greedy tokens)
and its bad inputs (one `error:` line, exit 2, before anything is built)."""

from __future__ import annotations

import re

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from xlm_jax.bench import decode  # noqa: E402

TINY = ["--hidden", "32", "--layers", "1", "--heads", "2", "--ffn", "64", "--vocab", "50", "--batch", "2",
        "--src-len", "6", "--max-len", "8", "--beam", "2", "--repeats", "1"]


def test_tiny_run_reports_every_side_and_agrees():
    args = decode.parse_args(TINY)
    decode.check_args(args)
    result = decode.run(args)
    assert result["agreement"] == 1.0  # same weights, same greedy tokens on both sides
    for side in ("jax_greedy", "hf_greedy", "jax_beam", "hf_beam"):
        r = result[side]
        assert r["sentences_per_s"] > 0 and r["tokens_per_s"] > 0 and 1 <= r["mean_length"] <= 7
    table = decode.format_table(args, result)
    assert table.count("\n| ") == 4 and "ratio jax / hf" in table  # one row per side


BAD = {
    "max_len_2": (["--max-len", "2"], r"--max-len 2: must be at least 3"),
    "heads": (["--hidden", "30", "--heads", "4"], r"--heads 4 does not divide --hidden 30"),
    "src_len_long": (["--src-len", "600"], r"--src-len 600: must be at most the model's 512 positions"),
    "beam_0": (["--beam", "0"], r"--beam"),
    "threads": (["--threads", "100000"], r"--threads 100000: this process may use"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input(case, capsys):
    extra, message = BAD[case]
    with pytest.raises(SystemExit) as e:
        decode.main(extra)
    assert e.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and re.search(message, lines[0]), err
