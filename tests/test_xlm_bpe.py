"""XLM's Moses + fastBPE tokenizer (`xlm_jax.data.xlm_bpe`): ids equal to transformers' XLMTokenizer on gettext text
(lowercased and cased dictionaries, en / fr / de / ro), decoding, special ids, the files `convert --bpe-codes` writes
for an XLM MLM .pth, and bad codes / dictionaries / languages refused with one message."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import sacremoses
import torch

import xlm_jax
from xlm_jax.core.errors import UserError
from xlm_jax.data import xlm_bpe as X
from xlm_jax.data.tokenizer_files import load_tokenizer
from xlm_jax.workflows import convert as C

from tiny_setup import gettext_texts, make_xlm_bpe

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def texts():
    found = gettext_texts(per_catalog=120)
    if min(len(v) for v in found.values()) < 50:
        pytest.skip("too few gettext catalogs on this system")
    return found


@pytest.fixture(scope="module", params=[True, False], ids=["lowercased", "cased"])
def tok_dir(request, texts, tmp_path_factory):
    d = tmp_path_factory.mktemp("xlm_bpe")
    codes, id2word = make_xlm_bpe(d, texts, lowercase=request.param)
    out = d / "tok"
    out.mkdir()
    X.write_xlm_tokenizer(out, codes, id2word, ("de", "en", "fr", "ro"), X.lowercased_dico(id2word), "test")
    return out, id2word, request.param


def _hf_ids(hf, text: str, lang: str) -> list[int]:
    # transformers 5's `tokenize` drops the lang keyword before `_tokenize` (every text gets English Moses rules);
    # `_tokenize(text, lang=)` is XLMTokenizer's language-aware path.
    return hf.convert_tokens_to_ids(hf._tokenize(text, lang=lang))


def test_ids_equal_transformers_xlm_tokenizer(tok_dir, texts):
    out, id2word, lowercase = tok_dir
    ours = load_tokenizer(out)
    hf = transformers.XLMTokenizer.from_pretrained(str(out))
    assert isinstance(ours, X.XLMBPETokenizer) and ours.lowercase_and_strip_accents is lowercase
    assert hf.do_lowercase_and_remove_accent is lowercase and X.lowercased_dico(id2word) is lowercase
    assert len(ours) == len(hf) == len(id2word)
    assert (ours.bos_id, ours.eos_id, ours.pad_id, ours.unk_id, ours.mask_id) == (
        hf.bos_token_id, hf.sep_token_id, hf.pad_token_id, hf.unk_token_id, hf.mask_token_id) == (0, 1, 2, 3, 5)
    n_unk = n = 0
    for lang, lines in texts.items():
        mine = ours.for_language(lang).encode_batch_pieces_ids(lines)
        for line, ids in zip(lines, mine):
            assert ids.tolist() == _hf_ids(hf, line, lang), (lang, line)
            n_unk, n = n_unk + int(np.sum(ids == 3)), n + len(ids)
    assert n > 10_000 and 0 < n_unk < n / 20  # pieces the dictionary left out (seen once) are <unk>, as in transformers
    # The public path (English Moses rules), special tokens written in the text, another script (all <unk>).
    for line in texts["en"][:50] + ["Press <special1> to <s> continue", "Привет, мир! Ελληνικά"]:
        assert ours.encode_pieces_ids(line) == hf.encode(line, add_special_tokens=False), line
    assert ours.encode_pieces_ids("a <special1> b", special_tokens=False) != ours.encode_pieces_ids("a <special1> b")


def test_decode_undoes_bpe_and_moses(tok_dir, texts):
    out, id2word, lowercase = tok_dir
    tok = load_tokenizer(out)
    for lang in ("en", "fr", "de"):
        t = tok.for_language(lang)
        detok = sacremoses.MosesDetokenizer(lang)
        checked = 0
        for line in texts[lang][:100]:
            ids = t.encode_pieces_ids(line)
            if 3 in ids:
                continue
            # XLM's `@@ ` removal, then Moses detokenization: the Moses words of the text, put back together.
            assert t.decode(t.frame(ids)) == detok.detokenize(t.words(line)), line
            pieces = [t.id_to_piece(i) for i in ids]
            assert " ".join(pieces).replace("@@ ", "") == " ".join(t.words(line))
            checked += 1
        assert checked > 20
    assert tok.decode([1, 3, 2, 5, 1]) == "<unk>"
    with pytest.raises(UserError, match="is not an id of this tokenizer"):
        tok.decode([len(tok)])


def test_framing_batches_and_languages(tok_dir):
    out, _, _ = tok_dir
    tok = load_tokenizer(out)
    a, b = tok.encode_pieces_ids("Hello world"), tok.encode_pieces_ids("Open the file")
    assert tok.encode("Hello world") == [1, *a, 1] and tok.encode_pair("Hello world", "Open the file") == [1, *a, 1, *b, 1]
    long = "Open the file now, please, and then close it again"
    width = len(a) + 3
    batch = tok.batch_encode(["Hello world", long], max_len=width)
    assert len(tok.encode_pieces_ids(long)) > width - 2 and batch["num_truncated"] == 1
    assert batch["input_ids"].shape == (2, width) and batch["input_ids"][0].tolist() == [1, *a, 1, 2]
    with pytest.raises(UserError, match="external word segmenter"):
        tok.for_language("zh")
    with pytest.raises(UserError, match="not a language of this XLM tokenizer.*valid: de, en, fr, ro"):
        tok.for_language("it")
    with pytest.raises(UserError, match="no character offsets"):
        tok.encode_with_offsets(["Hello"])


def test_hub_style_files(tok_dir, tmp_path):
    """The Hub's older XLM directories: tokenizer_config.json without tokenizer_class, `<specialN></w>` in vocab.json."""
    out, _, lowercase = tok_dir
    if lowercase:
        pytest.skip("once is enough")
    config = json.loads((out / X.CONFIG_JSON).read_text())
    del config["tokenizer_class"]
    vocab = {(k + "</w>" if k in X.SPECIAL_WORDS else k): v for k, v in json.loads((out / X.VOCAB_JSON).read_text()).items()}
    (tmp_path / X.CONFIG_JSON).write_text(json.dumps(config))
    (tmp_path / X.VOCAB_JSON).write_text(json.dumps(vocab))
    (tmp_path / X.MERGES_TXT).write_bytes((out / X.MERGES_TXT).read_bytes())
    ours, hub = load_tokenizer(out), load_tokenizer(tmp_path)
    text = "Could not open <special1> lock file /var/lib/dpkg/lock"
    assert hub.encode_pieces_ids(text) == ours.encode_pieces_ids(text) and hub.lang == "en"
    assert hub.id_to_piece(5) == "<special1>" and hub.mask_id == 5


def test_bad_codes_and_dictionaries(tok_dir, tmp_path):
    out, id2word, lowercase = tok_dir
    if not lowercase:
        pytest.skip("once is enough")
    codes = out / X.MERGES_TXT
    (tmp_path / "garbage").write_bytes(b"\x00\xff\xfe binary")
    (tmp_path / "four").write_text("a b 10\nc d e f\n")
    (tmp_path / "empty").write_text("\n")
    for name, match in (("garbage", "cannot be read as UTF-8"), ("four", "line 2: 'c d e f' is not 'a b count'"),
                        ("empty", "holds no merges"), ("missing", "does not exist")):
        with pytest.raises(UserError, match=match):
            X.read_codes(tmp_path / name)
    # Codes of another vocabulary: most merges make pieces this dictionary lacks.
    (tmp_path / "other").write_text("".join(f"ж{i} я{i} 5\n" for i in range(50)))
    with pytest.raises(UserError, match=r"50 of its 50 merges make pieces that the dictionary of test lacks"):
        X.check_codes_fit(X.read_codes(tmp_path / "other"), X.dico_vocab(id2word, "test"), "other", "test")
    X.check_codes_fit(X.read_codes(codes), X.dico_vocab(id2word, "test"), str(codes), "test")
    with pytest.raises(UserError, match="dictionary id 4 is 'w4'.*not an XLM dictionary"):
        X.dico_vocab(list(X.XLM_SPECIALS[:4]) + ["w4"], "test")


def _xlm_mlm_pth(path, id2word, cased_langs=("de", "en", "fr", "ro")):
    """A tiny random XLMWithLMHeadModel saved as facebookresearch/XLM's MLM .pth, with `id2word` as its dictionary."""
    cfg = transformers.XLMConfig(vocab_size=len(id2word), emb_dim=32, n_layers=1, n_heads=4, n_langs=len(cased_langs),
                                 use_lang_emb=True, max_position_embeddings=64)
    model = transformers.XLMWithLMHeadModel(cfg).eval()
    sd = {("module." + k.removeprefix("transformer.")) if k.startswith("transformer.") else k: v.clone()
          for k, v in model.state_dict().items() if not k.endswith("position_ids")}
    params = dict(emb_dim=32, n_layers=1, n_heads=4, n_langs=len(cased_langs), use_lang_emb=True,
                  gelu_activation=True, lang2id={c: i for i, c in enumerate(cased_langs)},
                  id2lang=dict(enumerate(cased_langs)), n_words=len(id2word), bos_index=0, eos_index=1, pad_index=2,
                  unk_index=3, mask_index=5)
    torch.save({"model": sd, "params": argparse.Namespace(**params), "dico_id2word": dict(enumerate(id2word)),
                "dico_word2id": {w: i for i, w in enumerate(id2word)}}, path)
    return model


def test_converted_xlm_mlm_carries_its_tokenizer(tok_dir, texts, tmp_path):
    out, id2word, lowercase = tok_dir
    if lowercase:
        pytest.skip("once is enough")
    pth = tmp_path / "src" / "mlm_tiny.pth"
    pth.parent.mkdir()
    _xlm_mlm_pth(pth, id2word)
    (pth.parent / "codes_tiny").write_bytes((out / X.MERGES_TXT).read_bytes())  # picked up next to the .pth
    line = C.convert(pth, tmp_path / "hf", to="hf")
    assert "tokenizer: Moses + BPE codes" in line and "lowercased" not in line
    # transformers reads the output as it reads the Hub's XLM models: AutoTokenizer -> XLMTokenizer, same ids.
    hf_tok = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "hf"))
    assert type(hf_tok).__name__ == "XLMTokenizer" and hf_tok.do_lowercase_and_remove_accent is False
    m = xlm_jax.load(tmp_path / "hf")
    assert isinstance(m.tokenizer, X.XLMBPETokenizer)
    for text in texts["en"][:20]:
        assert m.tokenizer.encode_pieces_ids(text) == hf_tok.encode(text, add_special_tokens=False)
    fills = m.fill_mask("Remove the <special1> file.", top_k=2, lang="en")
    assert len(fills) == 1 and len(fills[0]) == 2 and fills[0][0].id >= 14
    assert m.embed(["Paquets virtuels", "Virtual packages"], lang=["fr", "en"]).shape == (2, 32)
    # orbax output: the same files travel; xlm_jax.load finds them.
    C.convert(pth, tmp_path / "ours", bpe_codes=out / X.MERGES_TXT)
    assert json.loads((tmp_path / "ours" / X.CONFIG_JSON).read_text())["lang2id"] == {"de": 0, "en": 1, "fr": 2, "ro": 3}
    assert isinstance(xlm_jax.load(tmp_path / "ours").tokenizer, X.XLMBPETokenizer)


def test_convert_refuses_bad_codes(tok_dir, tmp_path, capsys):
    from xlm_jax.convert import main

    out, id2word, lowercase = tok_dir
    if lowercase:
        pytest.skip("once is enough")
    pth = tmp_path / "mlm.pth"
    _xlm_mlm_pth(pth, id2word)
    (tmp_path / "bad_codes").write_text("a b 3\nnot a codes line at all\n")
    (tmp_path / "other_codes").write_text("".join(f"ж{i} я{i} 5\n" for i in range(50)))
    (tmp_path / "codes_a").write_text("a b 3\n")
    (tmp_path / "codes_b").write_text("a b 3\n")
    cases = [
        (["--bpe-codes", str(tmp_path / "bad_codes")], "line 2: 'not a codes line at all' is not 'a b count'"),
        (["--bpe-codes", str(tmp_path / "other_codes")], "merges make pieces that the dictionary"),
        (["--bpe-codes", str(tmp_path / "nothing")], "does not exist"),
        ([], "several BPE codes files (codes_a, codes_b): pick the model's with --bpe-codes"),
        (["--to", "sentence-transformers", "--bpe-codes", str(tmp_path / "bad_codes")], "is for --to orbax / hf"),
    ]
    for extra, message in cases:
        with pytest.raises(SystemExit) as exit_:
            main([str(pth), str(tmp_path / "dst"), *extra])
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
        assert message in err, err
        assert not (tmp_path / "dst").exists()
