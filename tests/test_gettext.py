import glob
import json

import pytest

from xlm_jax.data import gettext as gt
from xlm_jax.core.errors import UserError


@pytest.mark.parametrize(
    "raw, clean",
    [
        ("_File", "File"),
        ("&Open", "Open"),
        ("Save ~As", "Save As"),
        ("ファイル(_F)", "ファイル"),
        ("Op_en the file", "Open the file"),
        ("%s files", "files"),
        ("Could not open '%s': %s", "Could not open"),
        ("%(count)d items in {0} of $1", "items in of"),
        ("<b>Bold</b> text &amp; more", "Bold text & more"),
        ("Find &amp; &Replace", "Find & Replace"),
        ("line\x07 with\tcontrol", "line with control"),
        ("my_var_name here", "my_var_name here"),  # several '_': an identifier, not an accelerator
    ],
)
def test_clean_text(raw, clean):
    assert gt.clean_text(raw) == clean


def test_message_filters():
    assert gt.message_pairs("Open the file", "Datei öffnen") == [("Open the file", "Datei öffnen")]
    assert gt.message_pairs("Open the file", "") == []  # untranslated
    assert gt.message_pairs("Open the file", "Open the file") == []  # identical to English
    assert gt.message_pairs("Quit", "Beenden") == []  # < 2 words
    assert gt.message_pairs("--help -v %d 1234", "--hilfe -v %d 1234") == []  # not prose
    assert gt.message_pairs("See http://x.org now", "Siehe http://x.org jetzt") == []
    assert gt.message_pairs("One line here\nTwo lines here", "Eine Zeile\nZwei Zeilen") == [
        ("One line here", "Eine Zeile"),
        ("Two lines here", "Zwei Zeilen"),
    ]
    assert gt.message_pairs("One line here\nTwo lines here", "Eine Zeile und zwei") == []  # unaligned


def test_normalize_locale():
    assert [gt.normalize_locale(x) for x in ["pt_BR", "pt", "de_CH", "zh_TW", "zh_CN", "no", "sr@latin", "en_GB", "de_DE.UTF-8"]] == [
        "pt", "pt", "de", "zh_Hant", "zh", "nb", None, None, "de",
    ]


def test_plural_forms_used():
    entries = [("%d file was deleted\0%d files were deleted", ["%d Datei wurde gelöscht", "%d Dateien wurden gelöscht"])]
    assert gt.catalog_pairs(entries) == [
        ("file was deleted", "Datei wurde gelöscht"),
        ("files were deleted", "Dateien wurden gelöscht"),
    ]


REAL_MO = sorted(glob.glob("/usr/share/locale/*/LC_MESSAGES/coreutils.mo"))


@pytest.mark.skipif(not REAL_MO, reason="no coreutils catalogs on this system")
def test_parse_real_catalog():
    mo = next(p for p in REAL_MO if "/de/" in p) if any("/de/" in p for p in REAL_MO) else REAL_MO[0]
    pairs = gt.catalog_pairs(gt.parse_mo(open(mo, "rb").read()))
    assert len(pairs) > 100
    assert all("%s" not in en and "%d" not in en for en, _ in pairs)


@pytest.mark.skipif(not REAL_MO, reason="no gettext catalogs on this system")
def test_build_corpus_on_real_catalogs(tmp_path):
    langs = ["de", "fr", "ru"]
    stats = gt.build_gettext_corpus(tmp_path / "c", langs=langs, domains=["coreutils", "grep", "sed"], min_pairs=10, workers=1)
    assert set(stats["languages"]) <= set(langs) and stats["total_pairs"] > 100
    assert json.loads((tmp_path / "c" / "stats.json").read_text())["total_pairs"] == stats["total_pairs"]
    for lang in stats["languages"]:
        stem = "-".join(sorted(["en", lang]))
        en = (tmp_path / "c" / "para" / f"{stem}.en").read_text().splitlines()
        tr = (tmp_path / "c" / "para" / f"{stem}.{lang}").read_text().splitlines()
        assert len(en) == len(tr) == stats["languages"][lang]["pairs"]
        assert len(set(zip(en, tr))) == len(en)  # de-duplicated
    assert (tmp_path / "c" / "mono" / "en.txt").read_text().strip()
    assert not list(tmp_path.glob(".c.tmp-*"))


def test_no_catalogs(tmp_path):
    with pytest.raises(UserError, match="no gettext catalogs.*corpus directory"):
        gt.build_gettext_corpus(tmp_path / "c", locale_dirs=[str(tmp_path / "nowhere")])
    assert not (tmp_path / "c").exists()
