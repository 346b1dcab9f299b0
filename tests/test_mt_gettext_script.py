"""experiments/mt_gettext.py's options: every bad value is one `error:` line, exit 2, nothing written (the runs
themselves take an hour; docs/translation.md "Results on this machine")."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "experiments" / "mt_gettext.py"


def _script():
    spec = importlib.util.spec_from_file_location("mt_gettext", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("args, needle", [
    (["--groups", "en-fr,xx"], "--groups='en-fr,xx'"),
    (["--groups", ","], "--groups=','"),
    (["--steps", "0"], "--steps=0"),
    (["--unmt-steps", "-1"], "--unmt-steps=-1"),
    (["--low-steps", "-2"], "--low-steps=-2"),
    (["--inits", "random,bert"], "--inits='random,bert'"),
    (["--mlm-steps", "0"], "--mlm-steps=0"),
    (["--low", "0"], "--low=0"),
    (["--eval-every", "-5"], "--eval-every=-5"),
    (["--tokens-per-batch", "16"], "--tokens-per-batch=16"),
    (["--lr", "0"], "--lr=0.0"),
    (["--warmup", "0"], "--warmup=0"),
    (["--jobs", "0"], "--jobs=0"),
    (["--jobs", "two"], "--jobs"),
])
def test_bad_option_is_one_error_line_and_writes_nothing(tmp_path, capsys, args, needle):
    work = tmp_path / "work"
    with pytest.raises(SystemExit) as exc:
        _script().main([str(work), *args])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and needle in err[0], err
    assert not work.exists()
