import shutil
import subprocess
import sys

import numpy as np
import pytest
import sentencepiece as spm

from xlm_jax.data.gettext import build_gettext_corpus
from xlm_jax.errors import UserError
from xlm_jax.tokenizer import Tokenizer, sample_sentences, sampling_probs, strip_accents_lower, train_tokenizer

# Latin, Cyrillic, Arabic, CJK (two), Devanagari, Greek, Thai, Hebrew.
LANGS = ["ar", "de", "el", "hi", "ja", "ru", "th", "zh", "he"]
VOCAB = 3000  # the CJK catalogs alone need ~2000 distinct characters at coverage 0.9995


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("gt") / "corpus"
    try:
        build_gettext_corpus(out, langs=None, domains=["glib20", "gtk20", "coreutils", "gdk-pixbuf"], min_pairs=50, workers=2)
    except UserError:
        pytest.skip("no gettext catalogs on this system")
    langs = sorted(p.stem for p in (out / "mono").glob("*.txt"))
    assert {"de", "ru", "ja"} <= set(langs)
    return out


def _lines(corpus, lang, n=150):
    return [line for line in (corpus / "mono" / f"{lang}.txt").read_text().splitlines() if line.strip()][:n]


@pytest.fixture(scope="module", params=["unigram", "bpe"])
def model(request, corpus, tmp_path_factory):
    path = tmp_path_factory.mktemp(request.param) / "spm.model"
    train_tokenizer([str(corpus)], VOCAB, str(path), model_type=request.param, max_sentences=20000)
    return request.param, path


def test_ids_layout(model):
    _, path = model
    tok = Tokenizer.load(path)
    sp = spm.SentencePieceProcessor(model_file=str(path))
    assert len(tok) == len(sp) + 2 == VOCAB + 2
    assert (tok.bos_id, tok.pad_id, tok.eos_id, tok.unk_id, tok.mask_id) == (0, 1, 2, 3, VOCAB + 1)
    assert (sp.unk_id(), sp.bos_id(), sp.eos_id()) == (0, 1, 2)
    assert tok.encode("") == [0, 2]
    a, b = tok.encode_pieces_ids("Hallo Welt"), tok.encode_pieces_ids("Привет мир")
    assert tok.encode("Hallo Welt") == [0, *a, 2]
    assert tok.encode_pair("Hallo Welt", "Привет мир") == [0, *a, 2, 2, *b, 2]
    assert a == [i + 1 for i in sp.encode("Hallo Welt")]
    assert tok.encode_pieces_ids("\U0001F9EA") and 3 in tok.encode_pieces_ids("\U0001F9EA\u16A0")  # unk → 3
    assert tok.decode(tok.encode("Hallo Welt")) == "Hallo Welt"
    assert len(tok.sha256) == 64


def test_parity_with_transformers(model, corpus, tmp_path):
    """Our ids equal transformers' XLMRobertaTokenizer on the same model file, in every script."""
    model_type, path = model
    from transformers import XLMRobertaTokenizer

    shutil.copy(path, tmp_path / "sentencepiece.bpe.model")
    hf = XLMRobertaTokenizer.from_pretrained(str(tmp_path))
    tok = Tokenizer.load(path)
    sp = spm.SentencePieceProcessor(model_file=str(path))
    texts = [t for lang in [*LANGS, "en"] if (corpus / "mono" / f"{lang}.txt").exists() for t in _lines(corpus, lang)]
    texts += ["", "  leading and  double  spaces ", "Ünïcödé ﬁ ligature ＦＵＬＬ"]
    assert len(texts) > 800
    pairs = list(zip(texts[::2], texts[1::2]))
    if model_type == "unigram":
        assert len(hf) == len(tok)
        assert hf.mask_token_id == tok.mask_id
        assert [tok.encode(t) for t in texts] == [hf(t)["input_ids"] for t in texts]
        assert [tok.encode_pair(a, b) for a, b in pairs] == [hf(a, b)["input_ids"] for a, b in pairs]
    else:
        # transformers v5 rebuilds any spm file as a Unigram model, so for bpe models the reference is
        # sentencepiece itself under the fairseq mapping (what fairseq does).
        ref = lambda t: [0, *[i + 1 if i else 3 for i in sp.encode(t)], 2]
        assert [tok.encode(t) for t in texts] == [ref(t) for t in texts]
        assert [tok.encode_pair(a, b) for a, b in pairs] == [[0, *ref(a)[1:-1], 2, 2, *ref(b)[1:-1], 2] for a, b in pairs]
    batch = tok.batch_encode(pairs[:8], max_len=16, pad_to=20)
    assert batch["input_ids"].shape == (8, 20) and batch["input_ids"].dtype == np.int32
    assert (batch["input_ids"][batch["attention_mask"] == 0] == 1).all()


def test_batch_encode_truncation(model):
    tok = Tokenizer.load(model[1])
    long = "Datei " * 40
    batch = tok.batch_encode(["kurz", long], max_len=12)
    assert batch["input_ids"].shape == (2, 12) and batch["num_truncated"] == 1
    assert batch["input_ids"][1, -1] == 2 and batch["attention_mask"][0].sum() == len(tok.encode("kurz"))
    pair = tok.batch_encode([(long, "kurz")], max_len=12)
    row = pair["input_ids"][0].tolist()
    assert len(row) == 12 and row[-1] == 2 and pair["num_truncated"] == 1
    assert row[-1 - len(tok.encode_pieces_ids("kurz")) - 1 : ] [0] == 2  # the short side survives whole


def test_lowercase_and_strip_accents(model):
    tok = Tokenizer.load(model[1], lowercase_and_strip_accents=True)
    assert strip_accents_lower("Ésta ÑOÑA Ελληνικά") == "esta nona ελληνικα"
    assert tok.encode("Ésta") == Tokenizer.load(model[1]).encode("esta")


def test_sampling():
    probs = sampling_probs({"en": 9000, "sw": 1000}, 0.3)
    assert probs["sw"] == pytest.approx(0.1**0.3 / (0.1**0.3 + 0.9**0.3))
    chosen, drawn = sample_sentences({"en": ["e"] * 900, "sw": ["s"] * 100}, 0.3, 1000)
    assert drawn["sw"] == round(probs["sw"] * 1000) > 100  # upsampled with repeats
    assert chosen.count("s") == drawn["sw"]


def test_vocab_too_large_cli(tmp_path):
    (tmp_path / "de.txt").write_text("ein kleiner Satz\nnoch ein Satz\n" * 20)
    result = subprocess.run(
        [sys.executable, "-m", "xlm_jax.tokenizer", "train", "--input", str(tmp_path / "de.txt"),
         "--vocab-size", "5000", "--output", str(tmp_path / "x.model"), "--quiet"],
        capture_output=True, text=True,
    )
    assert result.returncode == 2
    assert "--vocab-size 5000 is too large" in result.stderr and "de.txt" in result.stderr
    assert not (tmp_path / "x.model").exists()
