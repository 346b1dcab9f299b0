"""`python -m xlm_jax.bench.decode` and `python -m xlm_jax.bench.seq2seq` (which builds its model with decode's
`build_models`): seconds-long runs on a tiny model (both sides decode the same greedy tokens; both sides' training
steps compute the same losses) and the bad inputs of both commands (one `error:` line, exit 2, before anything is
built)."""

from __future__ import annotations

import re

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from xlm_jax.bench import decode, seq2seq  # noqa: E402

SHAPE = ["--hidden", "32", "--layers", "1", "--heads", "2", "--ffn", "64", "--vocab", "50", "--repeats", "1"]
TINY = SHAPE + ["--batch", "2", "--src-len", "6", "--max-len", "8", "--beam", "2"]
TINY_TRAIN = SHAPE + ["--batch", "4", "--src-len", "8", "--tgt-len", "9", "--steps", "2", "--breakdown"]


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


def test_tiny_training_run_same_losses_on_both_sides():
    args = seq2seq.parse_args(TINY_TRAIN)
    seq2seq.check_args(args)
    result = seq2seq.run(args)
    ours, hf = result["jax"], result["hf"]
    # Same weights, same padded batch, same mean token cross-entropy: the first step's losses agree.
    assert ours["first_loss"] == pytest.approx(hf["first_loss"], abs=1e-4)
    assert result["first_loss_diff"] < 1e-4
    # Same optimizer (Adam, clipping, the learning rate update by update): still the same after 3 updates.
    assert result["updates"] == 3
    assert ours["last_loss"] == pytest.approx(hf["last_loss"], abs=1e-4)
    # Rows are padded (between half and all of the 7 word slots), the start token is not predicted.
    assert 4 * 4 <= result["target_tokens"] <= 4 * 8 and result["tokens"] > result["target_tokens"]
    for r in (ours, hf):
        assert r["step_s"] > 0 and r["target_tokens_per_s"] == pytest.approx(result["target_tokens"] / r["step_s"])
    for part in ("forward", "forward_backward"):
        assert set(result["breakdown"][part]) == {"jax", "hf"} and min(result["breakdown"][part].values()) > 0
    table = seq2seq.format_table(args, result)
    assert table.count("\n| ") == 2 and "ratio jax / hf" in table  # one row per side
    assert table.count("\nbreakdown ") == 2


BAD = {
    "max_len_2": (decode, ["--max-len", "2"], r"--max-len 2: must be at least 3"),
    "heads": (decode, ["--hidden", "30", "--heads", "4"], r"--heads 4 does not divide --hidden 30"),
    "src_len_long": (decode, ["--src-len", "600"], r"--src-len 600: must be at most the model's 512 positions"),
    "beam_0": (decode, ["--beam", "0"], r"--beam"),
    "threads": (decode, ["--threads", "100000"], r"--threads 100000: this process may use"),
    "train_tgt_len_2": (seq2seq, ["--tgt-len", "2"], r"--tgt-len 2: must be at least 3"),
    "train_tgt_len_long": (seq2seq, ["--tgt-len", "513"], r"--tgt-len 513: must be at most the model's 512 positions"),
    "train_tgt_len_word": (seq2seq, ["--tgt-len", "many"], r"--tgt-len"),
    "train_steps_0": (seq2seq, ["--steps", "0"], r"--steps"),
    "train_src_len_2": (seq2seq, ["--src-len", "2"], r"--src-len 2: must be at least 3"),
    "train_heads": (seq2seq, ["--hidden", "30", "--heads", "4"], r"--heads 4 does not divide --hidden 30"),
    "train_threads": (seq2seq, ["--threads", "100000"], r"--threads 100000: this process may use"),
    "train_breakdown_value": (seq2seq, ["--breakdown=yes"], r"--breakdown: ignored explicit argument"),
    "train_max_len": (seq2seq, ["--max-len", "8"], r"unrecognized arguments: --max-len"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input(case, capsys):
    command, extra, message = BAD[case]
    with pytest.raises(SystemExit) as e:
        command.main(extra)
    assert e.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and re.search(message, lines[0]), err
