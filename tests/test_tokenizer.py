import shutil
import subprocess
import sys

import numpy as np
import pytest
import sentencepiece as spm

from xlm_jax.data.gettext import build_gettext_corpus
from xlm_jax.core.errors import UserError
from xlm_jax.data.tokenizer import Tokenizer, sample_sentences, sampling_probs, strip_accents_lower, train_tokenizer

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


# ------------------------------------------------------------- special tokens, truncation, bad inputs (issue #10)

import tiny_setup  # noqa: E402  tests/tiny_setup.py

from xlm_jax import tasks as T
from xlm_jax.models.config import get_model_config  # noqa: E402

SPECIAL_TEXTS = [
    "open the <mask> file", "the <mask> <mask> dog", "a <mask> b", "<mask>b", "a<mask>", "a<mask>b", "<mask>",
    " <mask> ", "a  <mask>\t b", "a\n<mask>", "<mask><mask>", "x </s> y", "x</s>y", "<s>", "a<s>b", "x <pad> y",
    "<pad><unk>", "le <unk> chat", "die katze </s></s> der hund", "<MASK>", "< mask >", "<mask", "<<mask>>", "</s",
    "datei <mask>.", "<mask>\u00a0file", "haus\u3000<mask>", "", " ", "open the file",
]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(our Tokenizer, transformers' XLMRobertaTokenizer) on the tiny unigram model of tiny_setup."""
    transformers = pytest.importorskip("transformers")
    d = tmp_path_factory.mktemp("tiny_tok")
    path = tiny_setup.make_tokenizer(d)
    shutil.copy(path, d / "sentencepiece.bpe.model")
    return Tokenizer.load(path), transformers.XLMRobertaTokenizer.from_pretrained(str(d))


def test_special_tokens_match_transformers(tiny):
    tok, hf = tiny
    assert hf.mask_token_id == tok.mask_id and hf.pad_token_id == tok.pad_id
    for text in SPECIAL_TEXTS:
        assert tok.encode(text) == hf(text)["input_ids"], text
    pairs = [("open the <mask>", "die <mask> datei"), ("<mask>", "<mask>"), ("x </s>", "</s> y"), ("a <s>", "b")]
    for a, b in pairs:
        assert tok.encode_pair(a, b) == hf(a, b)["input_ids"], (a, b)
    ids = tok.encode("open the <mask> file")
    assert ids.count(tok.mask_id) == 1 and ids == [0, *tok.encode_pieces_ids("open the"), tok.mask_id,
                                                   *tok.encode_pieces_ids("file"), 2]
    assert tok.encode("x </s> y")[1:-1].count(2) == 1 and tok.encode("<s>") == [0, 0, 2]
    # The batch paths agree with encode.
    batch = tok.batch_encode(SPECIAL_TEXTS, max_len=64)
    for row, mask, text in zip(batch["input_ids"], batch["attention_mask"], SPECIAL_TEXTS):
        assert row[mask == 1].tolist() == tok.encode(text)
    pieces = tok.encode_batch_pieces_ids(SPECIAL_TEXTS)
    assert [a.tolist() for a in pieces] == [tok.encode(t)[1:-1] for t in SPECIAL_TEXTS]


def test_special_tokens_can_stay_text(tiny, tmp_path):
    """special_tokens=False (pretraining preprocessing, as fairseq) and full-width look-alikes keep the text."""
    from xlm_jax.data import preprocess

    tok, _ = tiny
    sp = spm.SentencePieceProcessor(model_file=tok.path)
    plain = lambda t: [i + 1 if i else 3 for i in sp.encode(t)]
    for text in ("open the <mask> file", "x </s> y <s> <pad> <unk>"):
        assert tok.encode_pieces_ids(text, special_tokens=False) == plain(text)
        assert [a.tolist() for a in tok.encode_batch_pieces_ids([text], special_tokens=False)] == [plain(text)]
    preprocess._init_worker(tok.path, False)
    ids, lengths = preprocess._tokenize_chunk(["open the <mask> file", "x </s> y"])
    assert ids.tolist() == plain("open the <mask> file") + plain("x </s> y") and tok.mask_id not in ids
    # NFKC turns full-width brackets into "<mask>"; only the literal string is the special token here
    # (transformers' rebuilt Unigram model also maps the look-alike: a documented difference).
    assert tok.mask_id not in tok.encode("open \uff1cmask\uff1e file")


def test_special_tokens_on_real_text(model, corpus, tmp_path):
    """A mask in the middle of real sentences in nine scripts: the same ids as transformers (unigram models)."""
    model_type, path = model
    if model_type != "unigram":
        pytest.skip("transformers rebuilds every spm model as Unigram: bpe ids follow sentencepiece (see above)")
    from transformers import XLMRobertaTokenizer

    shutil.copy(path, tmp_path / "sentencepiece.bpe.model")
    hf = XLMRobertaTokenizer.from_pretrained(str(tmp_path))
    tok = Tokenizer.load(path)
    texts = []
    for lang in LANGS:
        if (corpus / "mono" / f"{lang}.txt").exists():
            for line in _lines(corpus, lang, 20):
                words = line.split()
                words[len(words) // 2] = "<mask>"
                texts += [" ".join(words), line.replace(" ", "<mask>", 1), line + " </s> " + line]
    assert texts
    assert [tok.encode(t) for t in texts] == [hf(t)["input_ids"] for t in texts]
    assert all(tok.mask_id in tok.encode(t) for t in texts[::3])


def test_truncation_never_exceeds_max_len(tiny):
    tok, hf = tiny
    long = "the cat dog house open file print page save document window close error message"
    texts = [long, "die katze", "", "<mask> " * 30, "x"]
    pairs = [(a, b) for a in texts for b in texts]
    for max_len in range(3, 20):
        batch = tok.batch_encode(texts, max_len=max_len)
        assert batch["input_ids"].shape[1] <= max_len
        for row, mask, text in zip(batch["input_ids"], batch["attention_mask"], texts):
            real = row[mask == 1].tolist()
            assert real == hf(text, truncation=True, max_length=max_len)["input_ids"], (max_len, text)
    for max_len in range(6, 30):
        for items in ([*texts, *pairs], pairs):
            batch = tok.batch_encode(items, max_len=max_len, pad_to=max_len + 3)
            assert batch["input_ids"].shape == (len(items), max_len + 3)
            lengths = batch["attention_mask"].sum(1)
            assert lengths.max() <= max_len and batch["num_truncated"] >= 1
        for (a, b), row, mask in zip(pairs, batch["input_ids"], batch["attention_mask"]):  # the pairs-only batch
            real = row[mask == 1].tolist()
            sep = real.index(2)
            assert real[0] == 0 and real[sep:sep + 2] == [2, 2] and real[-1] == 2
            # Each non-empty sentence keeps at least one piece.
            assert (sep > 1) == bool(tok.encode_pieces_ids(a))
            assert (len(real) - sep - 3 > 0) == bool(tok.encode_pieces_ids(b))
    # Too small for the specials plus one piece: a clear error naming max_len and the minimum.
    for max_len, items, minimum in [(0, texts, 3), (1, texts, 3), (2, ["x"], 3), (-5, texts, 3), (3, pairs, 6),
                                    (5, [*texts, pairs[0]], 6), (2, pairs, 6)]:
        with pytest.raises(UserError, match=rf"max_len={max_len} is too small.*>= {minimum}"):
            tok.batch_encode(items, max_len=max_len)
    for max_len in (2.5, "8", None, True):
        with pytest.raises(UserError, match=r"max_len=.* must be an integer >= 3"):
            tok.batch_encode(texts, max_len=max_len)
    for pad_to in (4, 0, -1, 9.0):
        with pytest.raises(UserError, match=r"pad_to=.* at least max_len=8"):
            tok.batch_encode(texts, max_len=8, pad_to=pad_to)


@pytest.mark.parametrize("family", ["xlmr", "xlm"])
def test_task_rows_never_exceed_max_len(tiny, family):
    """Every row builder of xlm_jax.tasks (fine-tuning and evaluation) holds max_len, or refuses it clearly."""
    tok, _ = tiny
    protocol = T.InputProtocol.from_config(get_model_config(f"{family}_tiny"))
    words = "the cat dog house open file print page save document window close".split()
    long = " ".join(words * 3)
    singles = [T.Example(long, None, "file", "en"), T.Example("cat", None, "file", "en")]
    pairs = [T.Example(long, long, "entailment", "en"), T.Example("", long, "neutral", "en"),
             T.Example("dog", "cat", "neutral", "en")]
    tokens = [T.TokenExample(words * 2, ["O"] * 24, "en"), T.TokenExample(["cat"], ["O"], "en")]
    single_min, pair_min = 3, protocol.n_specials(True) + 2
    for max_len in range(single_min, 24):
        enc = T.encode_sequence_examples(singles, tok, protocol, ("file",), max_len)
        assert max(map(len, enc.ids)) <= max_len and enc.truncated >= 1
        enc = T.encode_token_examples(tokens, tok, protocol, ("O",), max_len)
        assert max(map(len, enc.ids)) <= max_len and all(len(l) == len(r) for l, r in zip(enc.labels, enc.ids))
        if max_len >= pair_min:
            enc = T.encode_sequence_examples(pairs, tok, protocol, T.XNLI_LABELS, max_len)
            assert max(map(len, enc.ids)) <= max_len and enc.truncated >= 1
    for max_len in (0, 1, 2):
        for call in (lambda: T.encode_sequence_examples(singles, tok, protocol, ("file",), max_len),
                     lambda: T.encode_token_examples(tokens, tok, protocol, ("O",), max_len)):
            with pytest.raises(UserError, match=rf"max_len={max_len} is too small.*>= {single_min}"):
                call()
    with pytest.raises(UserError, match=rf"max_len={pair_min - 1} is too small: a sentence pair.*>= {pair_min}"):
        T.encode_sequence_examples(pairs, tok, protocol, T.XNLI_LABELS, pair_min - 1)


def test_bad_text_inputs(tiny):
    tok, _ = tiny
    for text in (None, 5, b"open", ["open"], 3.5):
        with pytest.raises(UserError, match=rf"text must be a str, got {type(text).__name__}"):
            tok.encode(text)
        with pytest.raises(UserError, match="text must be a str"):
            tok.encode_pair("open", text)
    cases = [
        ("open the file", r"texts must be a list.*got str.*wrap one text in a list"),
        (b"open", r"texts must be a list.*got bytes"),
        (None, r"texts must be a list.*got NoneType"),
        ({"a": "b"}, r"texts must be a list.*got dict"),
        ([], r"texts is empty"),
        (["open", None], r"texts\[1\] must be a str or a \(str, str\) pair, got NoneType"),
        ([("open",)], r"texts\[0\] must be a str or a \(str, str\) pair, got tuple"),
        ([("open", None)], r"texts\[0\] must be .* pair"),
        ([("a", "b", "c")], r"texts\[0\] must be .* pair"),
        ([1, 2], r"texts\[0\] must be"),
    ]
    for texts, pattern in cases:
        with pytest.raises(UserError, match=pattern):
            tok.batch_encode(texts, max_len=16)
    for texts in ("open", [None], ["a", 5]):
        with pytest.raises(UserError, match="texts"):
            tok.encode_batch_pieces_ids(texts)
    # Documented behaviour: an empty string is <s></s>; an empty list of texts has no pieces to encode.
    assert tok.encode("") == [0, 2] and tok.encode_pair("", "") == [0, 2, 2, 2]
    assert tok.batch_encode(["", ("", "")], max_len=6)["input_ids"].tolist() == [[0, 2, 1, 1], [0, 2, 2, 2]]
    assert tok.encode_batch_pieces_ids([]) == []
    assert tok.batch_encode((t for t in ["open", "file"]), max_len=8)["input_ids"].shape[0] == 2


def test_decode_refuses_what_is_not_an_id(tiny):
    tok, _ = tiny
    assert tok.decode(np.asarray(tok.encode("open <mask> file"), np.uint16)) == "open file" and tok.decode([]) == ""
    assert tok.decode([len(tok) - 1, 0, 2]) == ""  # the mask id, the last valid one, is skipped
    for ids in ([len(tok)], [5, 5000], [-1], [4, -7]):
        bad = next(i for i in ids if not 0 <= i < len(tok))
        pattern = rf"ids\[\d\] = {bad} is not an id of this tokenizer.*\[0, {len(tok) - 1}\]"
        with pytest.raises(UserError, match=pattern):
            tok.decode(ids)
    for ids in ([1.5], ["a"], None, 5, [True], "abc", [[0, 5, 2]]):
        with pytest.raises(UserError, match="decode takes one row of integer ids"):
            tok.decode(ids)
