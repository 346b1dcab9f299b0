"""HFTokenizer (a Hugging Face tokenizer.json) gives AutoTokenizer's ids; load_tokenizer picks the right file;
check_tokenizer_fits refuses a tokenizer that is not the model's. Every tokenizer is built here from gettext text
(no downloads): an XLM-R one (our SentencePiece model saved by transformers 5's XLMRobertaTokenizer, which writes
only tokenizer.json), a ModernBERT-style BPE ([CLS] A [SEP] B [SEP]) and a Llama-3-style byte-level BPE (BOS)."""

import json
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from xlm_jax.core.errors import UserError
from xlm_jax.data.gettext import build_gettext_corpus
from xlm_jax.data.hf_tokenizer import HFTokenizer
from xlm_jax.data.tokenizer import Tokenizer, check_tokenizer_fits
from xlm_jax.data.tokenizer_files import load_tokenizer

transformers = pytest.importorskip("transformers")
from tokenizers import AddedToken, Regex, decoders, models, normalizers, pre_tokenizers, processors, trainers  # noqa: E402
from tokenizers import Tokenizer as Backend  # noqa: E402

# Latin, Cyrillic, Greek, Arabic, Devanagari, Thai, Japanese, Chinese.
LANGS = ["de", "ru", "el", "ar", "hi", "th", "ja", "zh"]
EDGE = ["", "  leading and  double  spaces ", "Ünïcödé ﬁ ligature ＦＵＬＬ", "tab\tand\nnewline", "emoji \U0001F9EA"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("gt") / "corpus"
    try:
        build_gettext_corpus(out, langs=LANGS, domains=["glib20"], min_pairs=50, workers=1)
    except UserError:
        pytest.skip("no gettext catalogs on this system")
    return out


@pytest.fixture(scope="module")
def texts(corpus):
    """A few hundred real sentences in eight scripts and English, plus awkward strings."""
    out = []
    for lang in [*LANGS, "en"]:
        lines = [t for t in (corpus / "mono" / f"{lang}.txt").read_text().splitlines() if t.strip()]
        out += lines[:40]
    assert len(out) > 300
    return out + EDGE


def _with_specials(texts, mask: str, sep: str) -> list[str]:
    """Sentences with a mask token in the middle and a separator token written in the text."""
    out = []
    for line in texts[::12]:
        words = line.split() or [""]
        words[len(words) // 2] = mask
        out += [" ".join(words), f"{line} {sep} {line}"]
    return out


def _lines(corpus) -> list[str]:
    return [t for f in sorted((corpus / "mono").glob("*.txt")) for t in f.read_text().splitlines() if t.strip()]


# ------------------------------------------------------------------------------------------------ builders


@pytest.fixture(scope="module")
def xlmr(corpus, tmp_path_factory):
    """(our SentencePiece model, a transformers 5 XLM-R directory holding only tokenizer.json + config)."""
    d = tmp_path_factory.mktemp("xlmr")
    spm = d / "spm.model"
    subprocess.run([sys.executable, "-m", "xlm_jax.tokenizer", "train", "--input", str(corpus), "--vocab-size", "2000",
                    "--output", str(spm), "--quiet"], check=True, capture_output=True)
    (d / "src").mkdir()
    shutil.copy(spm, d / "src" / "sentencepiece.bpe.model")
    transformers.XLMRobertaTokenizer.from_pretrained(str(d / "src")).save_pretrained(str(d / "hf"))
    assert not list((d / "hf").glob("*.model")) and (d / "hf" / "tokenizer.json").is_file()
    return spm, d / "hf"


def _save(backend, out: Path, **special) -> Path:
    transformers.PreTrainedTokenizerFast(tokenizer_object=backend, **special).save_pretrained(str(out))
    return out


def _modernbert_backend(corpus) -> Backend:
    tok = Backend(models.BPE(unk_token="[UNK]"))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["[UNK]", "[CLS]", "[SEP]", "[PAD]", AddedToken("[MASK]", lstrip=True, special=True)]
    tok.train_from_iterator(_lines(corpus), trainers.BpeTrainer(
        vocab_size=1200, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS]:0 $A:0 [SEP]:0", pair="[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    return tok


MODERNBERT_SPECIALS = dict(unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]", pad_token="[PAD]",
                           mask_token="[MASK]")


@pytest.fixture(scope="module")
def modernbert(corpus, tmp_path_factory):
    return _save(_modernbert_backend(corpus), tmp_path_factory.mktemp("modernbert"), **MODERNBERT_SPECIALS)


LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")
LLAMA_SPECIALS = dict(bos_token="<|begin_of_text|>", eos_token="<|end_of_text|>", pad_token="<|end_of_text|>",
                      mask_token="<|mask|>")


def _llama_backend(corpus) -> Backend:
    tok = Backend(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(_lines(corpus), trainers.BpeTrainer(
        vocab_size=1500, special_tokens=["<|begin_of_text|>", "<|end_of_text|>", "<|mask|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    bos = tok.token_to_id("<|begin_of_text|>")
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single="<|begin_of_text|> $A",
                                      pair="<|begin_of_text|> $A:0 <|begin_of_text|>:1 $B:1",
                                      special_tokens=[("<|begin_of_text|>", bos)])])
    return tok


@pytest.fixture(scope="module")
def llama(corpus, tmp_path_factory):
    return _save(_llama_backend(corpus), tmp_path_factory.mktemp("llama"), **LLAMA_SPECIALS)


def _same_as_auto(directory: Path, texts: list[str], special_texts: list[str]) -> HFTokenizer:
    """Our ids == AutoTokenizer's for single texts, pairs, texts with special tokens, and the same length,
    special ids and decoded text."""
    ours = HFTokenizer.load(directory)
    auto = transformers.AutoTokenizer.from_pretrained(str(directory))
    assert len(ours) == len(auto)
    for name in ("pad", "unk", "mask"):
        assert getattr(ours, f"{name}_id") == getattr(auto, f"{name}_token_id"), name
    everything = texts + special_texts
    assert [ours.encode(t) for t in everything] == [auto(t)["input_ids"] for t in everything]
    pairs = list(zip(everything[::2], everything[1::2]))
    assert [ours.encode_pair(a, b) for a, b in pairs] == [auto(a, b)["input_ids"] for a, b in pairs]
    # The batch path is the single path, and the pieces are the row without the framing.
    pieces = ours.encode_batch_pieces_ids(everything)
    assert [ours.frame(p.tolist()) for p in pieces] == [ours.encode(t) for t in everything]
    ids = ours.encode(texts[0])
    assert ours.decode(ids) == auto.decode(ids, skip_special_tokens=True)
    return ours


# ------------------------------------------------------------------------------------------------ XLM-R


def test_xlmr_tokenizer_json_gives_the_sentencepiece_ids(xlmr, texts):
    """A transformers 5 XLM-R directory (tokenizer.json only): our ids == AutoTokenizer's == our SentencePiece
    Tokenizer's on the .model it was made from, single and pairs, in eight scripts."""
    spm, hf_dir = xlmr
    special_texts = _with_specials(texts, "<mask>", "</s>") + ["<s>", "x </s> y", "a<mask>b", "<pad><unk>"]
    ours = _same_as_auto(hf_dir, texts, special_texts)
    sp = Tokenizer.load(spm)
    assert ours.single == (0, "A", 2) and ours.pair == (0, "A", 2, 2, "B", 2)
    assert len(ours) == len(sp) == 2002
    for name in ("bos", "pad", "eos", "unk", "mask"):
        assert getattr(ours, f"{name}_id") == getattr(sp, f"{name}_id"), name
    everything = texts + special_texts
    assert [ours.encode(t) for t in everything] == [sp.encode(t) for t in everything]
    pairs = list(zip(everything[::2], everything[1::2]))
    assert [ours.encode_pair(a, b) for a, b in pairs] == [sp.encode_pair(a, b) for a, b in pairs]
    # Special-token strings stay text with special_tokens=False (pretraining preprocessing), as in SentencePiece,
    # although the Unigram vocabulary of the tokenizer.json holds them as pieces.
    literal = [a.tolist() for a in ours.encode_batch_pieces_ids(special_texts, special_tokens=False)]
    assert literal == [a.tolist() for a in sp.encode_batch_pieces_ids(special_texts, special_tokens=False)]
    assert all(sp.mask_id not in row and 2 not in row for row in literal)
    # batch_encode pads and truncates as the SentencePiece tokenizer does.
    for max_len, pad_to in ((16, None), (16, 24), (64, None)):
        for batch in (texts[:40], pairs[:40]):
            got, want = ours.batch_encode(batch, max_len, pad_to), sp.batch_encode(batch, max_len, pad_to)
            assert got["num_truncated"] == want["num_truncated"]
            np.testing.assert_array_equal(got["input_ids"], want["input_ids"])
            np.testing.assert_array_equal(got["attention_mask"], want["attention_mask"])
    assert ours.decode(ours.encode(texts[0])) == sp.decode(sp.encode(texts[0]))
    assert [ours.id_to_piece(i) for i in (0, 2, 5, 2001)] == [sp.id_to_piece(i) for i in (0, 2, 5, 2001)]


def test_xlmr_offsets_cover_the_same_characters(xlmr, texts):
    """encode_with_offsets (what QA reads): the same ids as SentencePiece, and every piece covers the same
    characters, up to the whitespace a "▁" piece stands for (SentencePiece gives it the space, tokenizers nothing)."""
    spm, hf_dir = xlmr
    ours, sp = HFTokenizer.load(hf_dir), Tokenizer.load(spm)
    sample = texts[::5] + ["open the <mask> file"]
    for text, (ids, spans), (sp_ids, sp_spans) in zip(sample, ours.encode_with_offsets(sample),
                                                      sp.encode_with_offsets(sample)):
        assert ids.dtype == np.int32 and spans.shape == (len(ids), 2) and spans.dtype == np.int32
        assert ids.tolist() == sp_ids.tolist()
        assert [text[b:e].strip() for b, e in spans] == [text[b:e].strip() for b, e in sp_spans], text


def test_sentencepiece_offsets_match_qa(xlmr, texts):
    """Tokenizer.encode_with_offsets is tasks.qa.encode_with_offsets (which it replaces), plain and lowercased."""
    from xlm_jax.tasks import qa

    spm, _ = xlmr
    sample = texts[::7] + ["ÉCOLE Straße <mask>"]
    for lowercase in (False, True):
        sp = Tokenizer.load(spm, lowercase_and_strip_accents=lowercase)
        for (a, sa), (b, sb) in zip(sp.encode_with_offsets(sample), qa.encode_with_offsets(sp, sample)):
            assert a.tolist() == b.tolist() and sa.tolist() == sb.tolist()


# ------------------------------------------------------------------------------------------------ BERT / Llama


def test_modernbert_style(modernbert, texts):
    ours = _same_as_auto(modernbert, texts, _with_specials(texts, "[MASK]", "[SEP]") + ["[CLS]", "a[MASK]b"])
    cls, sep = ours.cls_id, ours.sep_id
    assert ours.single == (cls, "A", sep) and ours.pair == (cls, "A", sep, "B", sep)
    assert (ours.bos_id, ours.eos_id) == (cls, sep)  # no bos / eos named: rows open with [CLS], close with [SEP]
    assert ours.n_specials(False) == 2 and ours.n_specials(True) == 3
    assert ours.encode_pieces_ids("a [MASK] b").count(ours.mask_id) == 1
    assert ours.mask_id not in ours.encode_pieces_ids("a [MASK] b", special_tokens=False)
    batch = ours.batch_encode([texts[0], (texts[1], texts[2])], max_len=12)
    assert batch["input_ids"].shape[1] <= 12 and (batch["input_ids"][batch["attention_mask"] == 0] == ours.pad_id).all()
    for row, mask in zip(batch["input_ids"], batch["attention_mask"]):
        assert row[0] == cls and row[mask == 1][-1] == sep


@pytest.mark.parametrize("kind", ["BertProcessing", "RobertaProcessing"])
def test_bert_and_roberta_post_processors(corpus, texts, tmp_path, kind):
    backend = _modernbert_backend(corpus)
    cls, sep = ("[CLS]", backend.token_to_id("[CLS]")), ("[SEP]", backend.token_to_id("[SEP]"))
    backend.post_processor = getattr(processors, kind)(sep, cls)
    ours = _same_as_auto(_save(backend, tmp_path, **MODERNBERT_SPECIALS), texts[::4], [])
    assert ours.n_specials(True) == (4 if kind == "RobertaProcessing" else 3)


def test_llama_style(llama, texts):
    ours = _same_as_auto(llama, texts, _with_specials(texts, "<|mask|>", "<|end_of_text|>"))
    bos = ours.bos_id
    assert ours.single == (bos, "A") and ours.pair == (bos, "A", bos, "B")
    assert ours.unk_id is None and ours.eos_id == ours.pad_id  # byte-level BPE: no <unk>; EuroBERT pads with eos
    assert ours.n_specials(False) == 1 and ours.n_specials(True) == 2
    batch = ours.batch_encode([texts[0], texts[1][:5]], max_len=10)
    assert batch["input_ids"].shape == (2, 10) and batch["num_truncated"] >= 1
    assert batch["input_ids"][0].tolist() == ours.frame(ours.encode_pieces_ids(texts[0])[:9])
    # Byte-level offsets: every character of the text is covered, the spans lie inside it.
    (ids, spans), = ours.encode_with_offsets([texts[-1 - len(EDGE)]])
    assert len(ids) == len(spans) and spans.min() >= 0 and spans.max() <= len(texts[-1 - len(EDGE)])


def test_gemma_style_written_by_gemma_tokenizer(corpus, texts, tmp_path):
    """mmBERT's vocabulary is Gemma 2's: a byte-fallback SentencePiece BPE whose tokenizer.json transformers 5's
    GemmaTokenizer writes and, at load, rebuilds from code (its own __init__). Our reading of the file gives the
    same ids; the SentencePiece file beside it (Gemma's ids: pad 0, eos 1, bos 2, unk 3, not fairseq's) is not used."""
    import sentencepiece as spm

    src = tmp_path / "src"
    src.mkdir()
    (tmp_path / "text.txt").write_text("\n".join(_lines(corpus)))
    spm.SentencePieceTrainer.train(
        input=str(tmp_path / "text.txt"), model_prefix=str(src / "tokenizer"), vocab_size=2500, model_type="bpe",
        byte_fallback=True, pad_id=0, eos_id=1, bos_id=2, unk_id=3, user_defined_symbols=["<mask>"],
        split_digits=True, allow_whitespace_only_pieces=True, remove_extra_whitespaces=False,
        normalization_rule_name="identity", minloglevel=2, num_threads=1)
    out = tmp_path / "gemma"
    transformers.GemmaTokenizer.from_pretrained(str(src), mask_token="<mask>").save_pretrained(str(out))
    assert json.loads((out / "tokenizer_config.json").read_text())["tokenizer_class"] == "GemmaTokenizer"
    ours = _same_as_auto(out, texts, _with_specials(texts, "<mask>", "<eos>"))
    assert ours.single == ("A",) and ours.pad_id == 0 and ours.unk_id == 3
    shutil.copy(src / "tokenizer.model", out / "tokenizer.model")
    assert isinstance(load_tokenizer(out), HFTokenizer)


def test_add_bos_and_eos_token_in_the_config_are_ignored(corpus, texts, tmp_path):
    """transformers 5 drops add_bos_token / add_eos_token from tokenizer_config.json when a tokenizer.json exists
    (the post-processor decides); so do we."""
    _save(_llama_backend(corpus), tmp_path, **LLAMA_SPECIALS)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())  # as transformers 4 wrote Llama's
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({**config, "add_bos_token": True, "add_eos_token": True}))
    ours = _same_as_auto(tmp_path, texts[::4], [])
    assert ours.single == (ours.bos_id, "A") and ours.pair == (ours.bos_id, "A", ours.bos_id, "B")


def test_special_tokens_map_names_and_adds_missing_specials(corpus, texts, tmp_path):
    """A transformers 4 style directory: specials named by special_tokens_map.json (tokenizer_config.json has no
    added_tokens_decoder), one of them ([MASK]) missing from the tokenizer.json: transformers appends it, so do we."""
    backend = _modernbert_backend(corpus)
    data = json.loads(backend.to_str())
    data["added_tokens"] = [t for t in data["added_tokens"] if t["content"] != "[MASK]"]
    data["model"]["vocab"] = {k: v for k, v in data["model"]["vocab"].items() if k != "[MASK]"}
    data["model"]["vocab"] = {k: i for i, k in enumerate(sorted(data["model"]["vocab"], key=data["model"]["vocab"].get))}
    for name in ("[CLS]", "[SEP]"):
        data["post_processor"]["special_tokens"][name]["ids"] = [data["model"]["vocab"][name]]
    (tmp_path / "tokenizer.json").write_text(json.dumps(data))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "PreTrainedTokenizerFast",
                                                                "mask_token": "[WRONG]"}))
    (tmp_path / "special_tokens_map.json").write_text(json.dumps(MODERNBERT_SPECIALS))
    ours = _same_as_auto(tmp_path, texts[::6], _with_specials(texts, "[MASK]", "[SEP]"))
    assert ours.mask_id == len(ours) - 1 == len(data["model"]["vocab"])


def test_no_pad_token_refuses_padding(corpus, tmp_path):
    specials = {k: v for k, v in LLAMA_SPECIALS.items() if k != "pad_token"}
    ours = HFTokenizer.load(_save(_llama_backend(corpus), tmp_path, **specials))
    assert ours.pad_id is None
    assert ours.batch_encode(["same", "same"], max_len=8)["input_ids"].shape == (2, len(ours.encode("same")))
    with pytest.raises(UserError, match="no pad token"):
        ours.batch_encode(["one", "two words here"], max_len=8)


# ------------------------------------------------------------------------------------------------ the loader


def test_load_tokenizer_picks_the_file(xlmr, llama, tmp_path):
    spm, hf_dir = xlmr
    assert isinstance(load_tokenizer(spm), Tokenizer) and isinstance(load_tokenizer(str(hf_dir)), HFTokenizer)
    assert isinstance(load_tokenizer(hf_dir / "tokenizer.json"), HFTokenizer)
    # transformers 4 XLM-R directories hold both: the SentencePiece model wins (same ids, its sha256 recorded).
    both = tmp_path / "both"
    shutil.copytree(hf_dir, both)
    shutil.copy(spm, both / "sentencepiece.bpe.model")
    tok = load_tokenizer(both)
    assert isinstance(tok, Tokenizer) and tok.path.endswith("sentencepiece.bpe.model")
    # A run directory: tokenizer.model beside training's tokenizer.json record (not a Hugging Face tokenizer).
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(spm, run / "tokenizer.model")
    (run / "tokenizer.json").write_text(json.dumps({"sha256": "ab" * 32, "path": str(spm), "data": "x"}))
    assert isinstance(load_tokenizer(run), Tokenizer)
    with pytest.raises(UserError, match="training's record"):
        load_tokenizer(run / "tokenizer.json")
    # A tokenizer.model whose ids are not fairseq's (here: beside a Llama-style tokenizer.json) loses.
    other = tmp_path / "other"
    shutil.copytree(llama, other)
    shutil.copy(spm, other / "tokenizer.model")
    assert isinstance(load_tokenizer(other), HFTokenizer)


def test_load_tokenizer_refusals(xlmr, tmp_path):
    spm, hf_dir = xlmr
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "list.json").write_text("[1, 2]")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "tokenizer.json").write_text(json.dumps({"model": {"type": "Nonsense"}}))
    cases = [(None, "give the path"), (tmp_path / "missing", "does not exist"),
             (tmp_path / "empty", "directory without a tokenizer file"), (tmp_path / "bad.json", "cannot be read"),
             (tmp_path / "list.json", "not a Hugging Face tokenizer.json"),
             (tmp_path / "broken", "cannot be read by the tokenizers library")]
    for path, words in cases:
        with pytest.raises(UserError, match=words) as err:
            load_tokenizer(path)
        assert path is None or str(path) in str(err.value)
        if path is not None and path.name != "broken":
            assert "tokenizer.json" in str(err.value) or "SentencePiece" in str(err.value)
    with pytest.raises(UserError, match="SentencePiece models only"):
        load_tokenizer(hf_dir, lowercase_and_strip_accents=True)


# ------------------------------------------------------------------------------------------------ the check


def test_check_tokenizer_fits(xlmr):
    spm, hf_dir = xlmr
    for tok in (Tokenizer.load(spm), HFTokenizer.load(hf_dir)):
        n = len(tok)
        check_tokenizer_fits(tok, n, "here", pad_id=1, mask_id=n - 1, bos_id=0, eos_id=2, unk_id=3)
        check_tokenizer_fits(tok, n + 6, "here", pad_id=1)  # spare rows are allowed
        with pytest.raises(UserError) as err:
            check_tokenizer_fits(tok, n - 2, "model.init_from=ckpt", mask_id=n - 3)
        msg = str(err.value)
        assert msg.startswith("model.init_from=ckpt: tokenizer " + tok.path)
        assert f"has {n} ids but the model's vocabulary has {n - 2} (config.vocab_size)" in msg
        assert f"mask token is id {n - 1} but the model's is {n - 3} (config.mask_token_id)" in msg
        assert "a model may have more rows than its tokenizer has ids, never fewer" in msg
        with pytest.raises(UserError, match=r"here: tokenizer .* has 2002 ids and the model's vocabulary has 2002 "
                                            r"\(config.vocab_size\); its pad token is id 1 but the model's is 0 "
                                            r"\(config.pad_token_id\): they do not belong together"):
            check_tokenizer_fits(tok, n, "here", pad_id=0)
        with pytest.raises(UserError, match="exactly the tokenizer's ids"):
            check_tokenizer_fits(tok, n + 6, "here", same_size=True)
        with pytest.warns(UserWarning, match=r"here: tokenizer .* has sha256 .* but 000000000000… was recorded"):
            check_tokenizer_fits(tok, n, "here", sha256="0" * 64)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            check_tokenizer_fits(tok, n, "here", sha256=tok.sha256)


def test_bad_inputs_are_refused_as_the_sentencepiece_tokenizer_refuses_them(modernbert):
    tok = HFTokenizer.load(modernbert)
    bad = "a \ud800 b"
    calls = [lambda: tok.encode(bad), lambda: tok.encode_pair("ok", bad), lambda: tok.encode(3),
             lambda: tok.batch_encode(["ok", bad], max_len=16), lambda: tok.batch_encode("one text", max_len=16),
             lambda: tok.batch_encode([], max_len=16), lambda: tok.batch_encode(["ok"], max_len=2),
             lambda: tok.encode_batch_pieces_ids([b"bytes"]), lambda: tok.encode_with_offsets([bad]),
             lambda: tok.decode([[1, 2]]), lambda: tok.decode([len(tok)]), lambda: tok.decode([0.5]),
             lambda: tok.id_to_piece(-1), lambda: tok.id_to_piece("3")]
    for call in calls:
        with pytest.raises(UserError):
            call()
    assert tok.encode_batch_pieces_ids([]) == [] and tok.encode_with_offsets([""])[0][1].shape == (0, 2)
