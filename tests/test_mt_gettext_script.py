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
    (["--en-de-steps", "-3"], "--en-de-steps=-3"),
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


def test_mlm_corpus_holds_training_sides_only(tmp_path):
    """The MLM (stage 2) never reads a held-out sentence: not the held-out pairs' sides, and not an English
    sentence held out for one language that sits in a training pair of the other."""
    corpus = tmp_path / "corpus"
    sides = {("train", "fr"): (["Open", "Close", "Save"], ["Ouvrir", "Fermer", "Enregistrer"]),
             ("valid", "fr"): (["Quit", "Print"], ["Quitter", "Imprimer"]),
             ("train", "de"): (["Open", "Print", "Help"], ["Öffnen", "Drucken", "Hilfe"]),
             ("valid", "de"): (["Exit"], ["Beenden"])}
    for (split, lang), (en, x) in sides.items():
        d = corpus / split / "para"
        d.mkdir(parents=True, exist_ok=True)
        l1, l2 = sorted(("en", lang))
        (d / f"{l1}-{l2}.en").write_text("".join(s + "\n" for s in en), encoding="utf-8")
        (d / f"{l1}-{l2}.{lang}").write_text("".join(s + "\n" for s in x), encoding="utf-8")
    out = tmp_path / "mlm_corpus"
    _script().build_mlm_corpus(corpus, out)
    mono = {f.stem: f.read_text(encoding="utf-8").splitlines() for f in (out / "mono").iterdir()}
    assert mono == {"en": ["Open", "Close", "Save", "Help"], "fr": ["Ouvrir", "Fermer", "Enregistrer"],
                    "de": ["Öffnen", "Drucken", "Hilfe"]}
    assert not out.with_name(out.name + ".tmp").exists()
