"""Translation for users and MT checkpoint interop: `python -m xlm_jax.translate`, `LoadedModel.translate`,
`convert` of Hugging Face `EncoderDecoderModel` directories and original XLM MT `.pth` files (in and out). Tiny
random models (transformers builds the HF ones; nothing is downloaded), CPU."""

from __future__ import annotations

import io
import re
import shutil
import subprocess
import sys
import types
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import xlm_jax
from xlm_jax.core.errors import UserError
from xlm_jax.data.tokenizer import Tokenizer
from xlm_jax.models import hf_seq2seq
from xlm_jax.models.config import EncoderDecoderConfig, encoder_decoder_config, get_model_config
from xlm_jax.models.decoder import EncoderDecoder, init_params
from xlm_jax.models.decoding import _greedy, greedy_decode
from xlm_jax.translate import main as translate_main
from xlm_jax.training.checkpoint import restore_params, save_params
from xlm_jax.workflows import convert as C
from xlm_jax.workflows.translate import MT_TRAIN_COMMAND, Translator, check_translation

from tiny_setup import gettext_texts, make_checkpoint, make_tokenizer, make_xlm_bpe

LANGS = ("de", "en", "fr")
SMALL = dict(hidden_size=32, num_heads=4, intermediate_size=64, max_positions=24, dropout=0.0, attention_dropout=0.0,
             n_langs=3, langs=LANGS)


def _perturbed(params, seed=0, scale=0.05):
    leaves, tree = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    return jax.tree_util.tree_unflatten(
        tree, [np.asarray(x + scale * jax.random.normal(k, x.shape, x.dtype)) for x, k in zip(leaves, keys)])


def _mt(family: str, vocab: int, **kw) -> tuple[EncoderDecoderConfig, dict]:
    name = {"xlm": "xlm_tiny", "xlmr": "xlmr_tiny"}[family]
    cfg = encoder_decoder_config(get_model_config(name, vocab_size=vocab, **{**SMALL, **kw}), 2)
    return cfg, _perturbed(nn.unbox(init_params(EncoderDecoder(cfg), jax.random.key(0))))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny XLM-R-family MT checkpoint with its tokenizer (as train_mt's OUT would hold it) and an MLM."""
    d = tmp_path_factory.mktemp("mt")
    tok = make_tokenizer(d)
    vocab = len(Tokenizer.load(tok))
    cfg, params = _mt("xlmr", vocab)
    save_params(d / "mt", params, cfg)
    shutil.copy(tok, d / "mt" / "tokenizer.model")
    mlm = make_checkpoint(d)
    shutil.copy(tok, mlm / "tokenizer.model")
    return types.SimpleNamespace(dir=d, tok=tok, mt=d / "mt", mlm=mlm, cfg=cfg, params=params)


def _run(capsys, monkeypatch, args, stdin: str | bytes = ""):
    """The command's main() in-process with `stdin` -> (exit code, stdout, stderr)."""
    data = stdin.encode() if isinstance(stdin, str) else stdin
    monkeypatch.setattr(sys, "stdin", types.SimpleNamespace(buffer=io.BytesIO(data)))
    capsys.readouterr()
    try:
        translate_main([str(a) for a in args])
        code = 0
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


# ------------------------------------------------------------------------------------------ translate


def test_translate_command_keeps_lines_and_warns_on_truncation(setup, capsys, monkeypatch):
    long_line = " ".join(["the cat open file print page"] * 10)  # far over 24 positions
    lines = ["the cat open file", "", "die katze", "   ", long_line, "save document"]
    code, out, err = _run(capsys, monkeypatch, [setup.mt, "--src-lang", "en", "--tgt-lang", "fr"],
                          "\n".join(lines) + "\n")
    assert code == 0, err
    got = out.split("\n")
    assert got[-1] == "" and len(got) - 1 == len(lines)  # line i translates line i
    assert got[1] == "" and got[3] == ""  # empty lines stay empty
    assert all(got[i] for i in (0, 2, 4))
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "1 of 6 texts" in warnings[0] and "truncated" in warnings[0]

    # The notebook API gives the same translations (greedy; beam search on the same texts works too).
    m = xlm_jax.load(setup.mt)
    assert m.is_translation and "translation xlmr" in repr(m)
    with pytest.warns(UserWarning, match="truncated"):
        assert m.translate(lines, src_lang="en", tgt_lang="fr") == got[:-1]
    assert m.translate("the cat open file", src_lang="en", tgt_lang="fr") == got[0]
    beams = m.translate(lines[:3], src_lang="en", tgt_lang="fr", beam=3, length_penalty=0.6, max_len=12)
    assert len(beams) == 3 and beams[1] == ""


def test_translations_are_the_decoder_output(setup):
    """The Translator's text is the tokenizer's reading of greedy_decode on the framed source."""
    m = xlm_jax.load(setup.mt)
    text = "the cat open file"
    got = m.translate([text], src_lang="en", tgt_lang="de", max_len=10)[0]
    ids = [0, *m.tokenizer.encode_pieces_ids(text, special_tokens=False), 2]
    src = np.full((1, 16), 1, np.int32)
    src[0, :len(ids)] = ids
    tokens, lengths = greedy_decode(EncoderDecoder(setup.cfg), m.params, src, (src != 1).astype(np.int32), None,
                                    np.array([LANGS.index("de")]), max_len=10)
    assert got == m.tokenizer.decode(np.asarray(tokens)[0, 1:int(lengths[0]) - 1].tolist())
    # Shapes are bucketed: other texts of similar lengths compile nothing new.
    m.translate(["die katze", "le chat"], src_lang="en", tgt_lang="fr", max_len=10)
    compiled = _greedy._cache_size()
    m.translate(["the dog", "page"], src_lang="fr", tgt_lang="de", max_len=10)
    assert _greedy._cache_size() == compiled


BAD = {
    "unknown_src_lang": (["--src-lang", "xx", "--tgt-lang", "fr"], r"src_lang='xx': not a language of this model; "
                                                                   r"valid: de, en, fr"),
    "unknown_tgt_lang": (["--src-lang", "en", "--tgt-lang", "ja"], r"tgt_lang='ja': not a language"),
    "beam_zero": (["--src-lang", "en", "--tgt-lang", "fr", "--beam", "0"], r"beam=0: must be"),
    "length_penalty_text": (["--src-lang", "en", "--tgt-lang", "fr", "--length-penalty", "long"],
                            r"--length-penalty 'long': must be a number"),
    "length_penalty_nan": (["--src-lang", "en", "--tgt-lang", "fr", "--length-penalty", "nan"],
                           r"length_penalty=nan: must be"),
    "max_len_too_small": (["--src-lang", "en", "--tgt-lang", "fr", "--max-len", "2"], r"max_len=2: must be"),
    "max_len_too_large": (["--src-lang", "en", "--tgt-lang", "fr", "--max-len", "100"],
                          r"max_len=100: must be at most the decoder's 24 positions"),
    "mlm_checkpoint": (["--src-lang", "en", "--tgt-lang", "fr"], "a masked LM"),
    "not_utf8": (["--src-lang", "en", "--tgt-lang", "fr"], r"stdin: not UTF-8"),
    "no_checkpoint": (["--src-lang", "en", "--tgt-lang", "fr"], r"no such file or directory"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_translate_bad_input(setup, capsys, monkeypatch, case):
    extra, message = BAD[case]
    ckpt = {"mlm_checkpoint": setup.mlm, "no_checkpoint": setup.dir / "nothing"}.get(case, setup.mt)
    stdin = b"the cat\n\xff\xfe\n" if case == "not_utf8" else "the cat\n"
    code, out, err = _run(capsys, monkeypatch, [ckpt, *extra], stdin)
    assert code == 2
    assert out == ""  # nothing written
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert re.search(message, lines[0]), lines[0]
    if case == "mlm_checkpoint":
        assert MT_TRAIN_COMMAND in lines[0]


def test_translate_command_on_empty_stdin_writes_nothing(setup, capsys, monkeypatch):
    code, out, err = _run(capsys, monkeypatch, [setup.mt, "--src-lang", "en", "--tgt-lang", "fr"], "")
    assert code == 0 and out == "", err
    assert "0 lines: 0 translated, 0 empty (kept empty) en->fr" in err and "error" not in err


def test_translate_command_subprocess_exit_path(setup, tmp_path):
    """The real exit path once: a masked LM given to translate is exit 2, one error line naming train_mt."""
    result = subprocess.run([sys.executable, "-m", "xlm_jax.translate", str(setup.mlm), "--src-lang", "en",
                             "--tgt-lang", "fr"], input="the cat\n", capture_output=True, text=True, timeout=600)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and "python -m xlm_jax.train_mt" in result.stderr


def test_api_refuses_crossed_methods(setup):
    m = xlm_jax.load(setup.mt)
    for call in (lambda: m.embed(["the cat"]), lambda: m.hidden_states([[0, 5, 2]]), lambda: m.fill_mask("a <mask>")):
        with pytest.raises(UserError, match="translation model.*translate"):
            call()
    mlm = xlm_jax.load(setup.mlm)
    with pytest.raises(UserError, match="a masked LM.*python -m xlm_jax.train_mt"):
        mlm.translate("the cat", src_lang="en", tgt_lang="fr")
    with pytest.raises(UserError, match="beam=0"):
        m.translate("the cat", src_lang="en", tgt_lang="fr", beam=0)
    with pytest.raises(UserError, match="length_penalty='1'"):
        m.translate("the cat", src_lang="en", tgt_lang="fr", length_penalty="1")
    with pytest.raises(UserError, match="tgt_lang=None"):
        m.translate("the cat", src_lang="en")
    # No texts: no translations (issue 21), the settings still checked.
    assert m.translate([], src_lang="en", tgt_lang="fr") == []
    with pytest.raises(UserError, match="tgt_lang=None"):
        m.translate([], src_lang="en")


def test_saved_translation_model_translates_the_same(setup, tmp_path):
    """LoadedModel.save round trip (ours and Hugging Face's EncoderDecoderModel layout): the same translations."""
    m = xlm_jax.load(setup.mt)
    texts = ["the cat open file", "", "save document"]
    want = m.translate(texts, src_lang="en", tgt_lang="fr", max_len=10)
    for fmt in ("xlm_jax", "hf"):
        again = xlm_jax.load(m.save(tmp_path / fmt, format=fmt))
        assert again.is_translation and again.config.decoder.langs == LANGS
        assert again.translate(texts, src_lang="en", tgt_lang="fr", max_len=10) == want
    # An encoder-decoder is not a sentence encoder.
    with pytest.raises(UserError, match="encoder-decoder .*--to sentence-transformers needs an encoder"):
        C.convert_sentence_transformers(setup.mt, tmp_path / "st")
    assert not (tmp_path / "st").exists()


def test_check_translation_for_unnamed_languages():
    cfg, params = _mt("xlmr", 40, langs=())
    with pytest.raises(UserError, match="records no language codes"):
        check_translation(cfg, "en", "fr")
    one, _ = _mt("xlmr", 40, n_langs=1, langs=())
    check_translation(one, "en", "fr")  # one target language: nothing to choose
    with pytest.raises(UserError, match="not a translation model"):
        Translator(cfg.encoder, params, None)


# --------------------------------------------------------------------------------------- convert (MT)

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


def _hf_logits(hf, src, src_mask, tgt, tgt_langs):
    with torch.no_grad():
        return hf(input_ids=torch.tensor(src), attention_mask=torch.tensor(src_mask),
                  decoder_input_ids=torch.tensor(tgt),
                  decoder_token_type_ids=torch.tensor(np.broadcast_to(tgt_langs[:, None], tgt.shape).copy())
                  ).logits.numpy()


def _inputs(vocab):
    rng = np.random.default_rng(0)
    src = rng.integers(5, vocab, (2, 7)).astype(np.int32)
    src[:, 0], src[:, -1] = 0, 2
    tgt = rng.integers(5, vocab, (2, 5)).astype(np.int32)
    tgt[:, 0] = 0
    return src, np.ones_like(src), tgt, np.array([2, 0], np.int32)


def test_hf_encoder_decoder_round_trip(tmp_path, capsys):
    common = dict(vocab_size=40, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
                  max_position_embeddings=34, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    encoder = transformers.XLMRobertaModel(transformers.XLMRobertaConfig(**common, type_vocab_size=1),
                                           add_pooling_layer=False)
    decoder = transformers.XLMRobertaForCausalLM(transformers.XLMRobertaConfig(
        **common, type_vocab_size=3, is_decoder=True, add_cross_attention=True))
    hf = transformers.EncoderDecoderModel(encoder=encoder, decoder=decoder)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for _, p in hf.named_parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    hf.eval().save_pretrained(tmp_path / "hf")
    (tmp_path / "hf" / "sentencepiece.bpe.model").write_bytes(b"stand-in")  # the tokenizer travels

    # HF -> ours: same logits.
    line = C.convert(tmp_path / "hf", tmp_path / "ours")
    assert "EncoderDecoderModel" in line and "xlm_jax orbax" in line
    assert (tmp_path / "ours" / "sentencepiece.bpe.model").read_bytes() == b"stand-in"
    params, cfg = restore_params(tmp_path / "ours")
    assert isinstance(cfg, EncoderDecoderConfig) and cfg.target_langs == 3
    src, mask, tgt, tgt_langs = _inputs(40)
    want = _hf_logits(hf, src, mask, tgt, tgt_langs)
    got = EncoderDecoder(cfg).apply({"params": params}, src, mask, None, tgt, np.ones_like(tgt),
                                    np.broadcast_to(tgt_langs[:, None], tgt.shape))
    np.testing.assert_allclose(np.asarray(got), want, atol=1e-4)

    # Ours (with language codes) -> HF: transformers loads it, nothing missing, same logits.
    named = EncoderDecoderConfig(cfg.encoder.replace(n_langs=3, langs=LANGS),
                                 cfg.decoder.replace(n_langs=3, langs=LANGS))
    save_params(tmp_path / "named", params, named)
    line = C.convert(tmp_path / "named", tmp_path / "back", to="hf")
    assert "Hugging Face" in line
    back, info = transformers.EncoderDecoderModel.from_pretrained(tmp_path / "back", output_loading_info=True)
    # Only the encoder's pooler is missing (EncoderDecoderModel never runs it; our encoder has none), as for
    # encoder exports.
    assert set(info["missing_keys"]) <= {"encoder.pooler.dense.weight", "encoder.pooler.dense.bias"}, info
    assert not info["unexpected_keys"] and not info["mismatched_keys"], info
    np.testing.assert_allclose(_hf_logits(back.eval(), src, mask, tgt, tgt_langs), want, atol=1e-4)
    # ... and back again: exact, the language codes included.
    again, again_cfg, source = C.load_any(tmp_path / "back")
    assert again_cfg == named and source.architecture == C.MT_ARCHITECTURE and source.kind == "hf"
    jax.tree_util.tree_map(np.testing.assert_array_equal, again, jax.tree_util.tree_map(np.asarray, params))

    # Greedy decoding agrees with transformers' generate on the exported model (target language 0, HF's default).
    tokens, _ = greedy_decode(EncoderDecoder(named), params, src, mask, None, np.zeros(2, np.int32), max_len=9)
    with torch.no_grad():
        hf_tokens = back.generate(input_ids=torch.tensor(src), attention_mask=torch.tensor(mask), max_length=9,
                                  num_beams=1, do_sample=False, decoder_start_token_id=0, pad_token_id=1,
                                  eos_token_id=2).numpy()
    for row, hf_row in zip(np.asarray(tokens).tolist(), hf_tokens.tolist()):
        hf_row = hf_row + [1] * (9 - len(hf_row))  # HF stops when every row is done; pad = 1
        # At max_len an unfinished row ends with EOS in ours (XLM's rule), with its last word in HF's.
        assert row == hf_row if 2 in hf_row else row[:8] == hf_row[:8], (row, hf_row)

    # An encoder-decoder is not an encoder: --architecture is refused, as is the encoder API.
    with pytest.raises(UserError, match="--architecture XLMRobertaModel is for encoders"):
        C.load_any(tmp_path / "back", architecture="XLMRobertaModel")
    with pytest.raises(UserError, match="translation model"):
        xlm_jax.load(tmp_path / "back", tokenizer=False).hidden_states([[0, 5, 2]])


def _xlm_mt_file(path: Path, cfg: EncoderDecoderConfig, params: dict, id2word: list[str] | None = None,
                 **extra_params) -> Path:
    state = hf_seq2seq.params_to_xlm_mt(params, cfg)
    id2word = id2word or [f"w{i}" for i in range(cfg.encoder.vocab_size)]
    p = {"emb_dim": 32, "n_heads": 4, "n_langs": 3, "lang2id": {lang: i for i, lang in enumerate(LANGS)},
         "id2lang": dict(enumerate(LANGS)), "n_words": cfg.encoder.vocab_size, "n_layers": 12,
         "n_enc_layers": 2, "n_dec_layers": 2, "bos_index": 0, "eos_index": 1, "pad_index": 2, "unk_index": 3,
         "mask_index": 5, "gelu_activation": True, "use_lang_emb": True, **extra_params}
    torch.save({"encoder": {f"module.{k}": torch.tensor(v) for k, v in state["encoder"].items()},
                "decoder": {k: torch.tensor(v) for k, v in state["decoder"].items()},
                "params": p, "dico_id2word": dict(enumerate(id2word))}, path)
    return path


@pytest.fixture(scope="module")
def xlm_bpe(tmp_path_factory):
    """fastBPE-style codes and XLM's (lowercased) dictionary learned on gettext text (`tiny_setup.make_xlm_bpe`)."""
    d = tmp_path_factory.mktemp("xlm_bpe")
    texts = gettext_texts(("fr", "de"), ("apt", "bash", "coreutils"), per_catalog=60)
    if len(texts["fr"]) < 20:
        pytest.skip("too few gettext catalogs on this system")
    codes, id2word = make_xlm_bpe(d, texts, lowercase=True, vocab_size=400)
    return types.SimpleNamespace(codes=codes, id2word=id2word, texts=texts)


def test_xlm_mt_pth_converts(tmp_path, xlm_bpe, capsys, monkeypatch):
    cfg, params = _mt("xlm", len(xlm_bpe.id2word), intermediate_size=128, max_positions=32)
    src = _xlm_mt_file(tmp_path / "best-valid_en-fr_mt_bleu.pth", cfg, params, xlm_bpe.id2word)
    line = C.convert(src, tmp_path / "ours")
    assert "converted xlm checkpoint" in line and "EncoderDecoderModel" in line
    assert "note: no BPE codes found next to it" in line and "--bpe-codes FILE" in line
    restored, restored_cfg = restore_params(tmp_path / "ours")
    assert restored_cfg.encoder.langs == LANGS and restored_cfg.decoder.num_layers == 2
    assert restored_cfg.encoder.max_positions == 32
    jax.tree_util.tree_map(np.testing.assert_array_equal, restored, params)
    # The XLM family has no transformers encoder-decoder class: refused before anything is written.
    with pytest.raises(UserError, match="keep it as xlm_jax"):
        C.convert(src, tmp_path / "hf", to="hf")
    assert not (tmp_path / "hf").exists()
    # A vocabulary of another size is refused, naming the tensor.
    with pytest.raises(UserError, match="vocab-size"):
        C.load_any(src, vocab_size=cfg.encoder.vocab_size + 1)
    # Without its BPE codes no tokenizer travels with an XLM checkpoint: translate says how to give one.
    m = xlm_jax.load(tmp_path / "ours")
    assert m.is_translation and m.tokenizer is None
    with pytest.raises(UserError, match="needs a tokenizer"):
        m.translate("hello", src_lang="en", tgt_lang="fr")
    # With them (--bpe-codes, or `codes` next to the .pth): Moses + BPE with the dictionary's ids, end to end.
    line = C.convert(src, tmp_path / "with_codes", bpe_codes=xlm_bpe.codes)
    assert "tokenizer: Moses + BPE codes" in line and "(lowercased, accents stripped)" in line
    m = xlm_jax.load(tmp_path / "with_codes")
    tok = m.tokenizer
    assert (tok.bos_id, tok.eos_id, tok.pad_id, tok.unk_id, tok.mask_id) == (0, 1, 2, 3, 5) and len(tok) == len(
        xlm_bpe.id2word) and tok.langs == LANGS
    texts = xlm_bpe.texts["en"][:3] + [""] + xlm_bpe.texts["en"][3:5]
    out = m.translate(texts, src_lang="en", tgt_lang="fr", max_len=12)
    # The same as decoding by hand: English Moses + BPE ids framed `</s> … </s>`, greedy, French detokenization.
    en, fr = tok.for_language("en"), tok.for_language("fr")
    src_row = en.frame(en.encode_pieces_ids(texts[0], special_tokens=False))
    ids, lengths = greedy_decode(EncoderDecoder(cfg), m.params, jnp.asarray([src_row]),
                                 jnp.ones((1, len(src_row)), jnp.int32), jnp.full((1, len(src_row)), 1, jnp.int32),
                                 jnp.asarray([2]), max_len=12)
    assert out[0] == fr.decode(np.asarray(ids)[0, 1:max(1, int(lengths[0]) - 1)].tolist()) and out[3] == ""
    assert all(isinstance(t, str) for t in out) and any(out)
    code, stdout, err = _run(capsys, monkeypatch, [str(tmp_path / "with_codes"), "--src-lang", "en", "--tgt-lang", "fr",
                                                   "--max-len", "12"], "\n".join(texts) + "\n")
    assert code == 0 and stdout.splitlines() == out, err
    # The .pth itself with that tokenizer directory given (`translate --tokenizer DIR`): the same translations.
    assert xlm_jax.load(src, tokenizer=tmp_path / "with_codes").translate(
        texts, src_lang="en", tgt_lang="fr", max_len=12) == out
    # The codes next to the .pth are picked up without the flag.
    shutil.copy(xlm_bpe.codes, tmp_path / "codes")
    assert "tokenizer: Moses + BPE codes" in C.convert(src, tmp_path / "auto")
    assert (tmp_path / "auto" / "merges.txt").read_bytes() == xlm_bpe.codes.read_bytes()


def test_xlm_mt_pth_bad_codes(tmp_path, xlm_bpe, capsys):
    """Codes that do not parse or do not belong to the dictionary, and --bpe-codes for a source that is not an XLM
    .pth: one error line, exit 2, nothing written."""
    from xlm_jax.convert import main as convert_main

    cfg, params = _mt("xlm", len(xlm_bpe.id2word), intermediate_size=128, max_positions=32)
    src = _xlm_mt_file(tmp_path / "mt.pth", cfg, params, xlm_bpe.id2word)
    for name in ("w", "plain"):
        (tmp_path / name).mkdir()
    specials = xlm_bpe.id2word[:14]
    # XLM's special tokens, then words w14, w15, ...: not the codes' pieces; without the specials: not XLM's at all.
    words = _xlm_mt_file(tmp_path / "w" / "mt.pth", cfg, params, specials + [f"w{i}" for i in range(14, len(xlm_bpe.id2word))])
    plain = _xlm_mt_file(tmp_path / "plain" / "mt.pth", cfg, params)
    (tmp_path / "garbled").write_text("e r 10\ner</w>\n")
    for argv, message in (([str(src), "--bpe-codes", str(tmp_path / "garbled")], "garbled line 2: 'er</w>' is not"),
                          ([str(words), "--bpe-codes", str(xlm_bpe.codes)], "make pieces that the dictionary of"),
                          ([str(plain), "--bpe-codes", str(xlm_bpe.codes)], "dictionary id 0 is 'w0'"),
                          ([str(tmp_path / "ours_mt"), "--bpe-codes", str(xlm_bpe.codes)], "no such file")):
        with pytest.raises(SystemExit) as exit_:
            convert_main([argv[0], str(tmp_path / "dst"), *argv[1:]])
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1 and message in err, err
        assert not (tmp_path / "dst").exists()
    save_params(tmp_path / "orbax", params, cfg)
    with pytest.raises(UserError, match="BPE codes belong to an original XLM .pth"):
        C.convert(tmp_path / "orbax", tmp_path / "dst", bpe_codes=xlm_bpe.codes)
    assert not (tmp_path / "dst").exists()


def test_xlm_mt_pth_bad_files(tmp_path):
    cfg, params = _mt("xlm", 40, intermediate_size=128)
    bad = _xlm_mt_file(tmp_path / "a.pth", cfg, params)
    ckpt = torch.load(bad, weights_only=True)
    del ckpt["decoder"]["layer_norm15.1.weight"]
    torch.save(ckpt, tmp_path / "b.pth")
    with pytest.raises(UserError, match="layer_norm15.1.weight"):
        C.load_any(tmp_path / "b.pth")
    ckpt["decoder"] = {}
    torch.save(ckpt, tmp_path / "c.pth")
    with pytest.raises(UserError, match="decoder state dict holds no layers"):
        C.load_any(tmp_path / "c.pth")


def test_commands_that_need_an_encoder_refuse_a_translation_model(setup, tmp_path, capsys):
    """merge, negatives / retrieval, finetune init= and train model.init_from= given an MT checkpoint: one
    `error:` line naming it and saying it is a translation model, exit 2, nothing written (an AttributeError
    traceback before)."""
    from xlm_jax.finetune import main as finetune_main
    from xlm_jax.merge import main as merge_main
    from xlm_jax.negatives import main as negatives_main
    from xlm_jax.train import main as train_main

    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text('{"anchor": "a b", "positive": "c d"}\n')
    mt = str(setup.mt)
    runs = {
        "merge": (merge_main, [str(tmp_path / "merged"), mt, mt]),
        "negatives": (negatives_main, ["--checkpoint", mt, "--pairs", str(pairs), "--out", str(tmp_path / "n.jsonl")]),
        "finetune init=": (finetune_main, ["task=contrastive", f"init={mt}", f"train=[{pairs}]",
                                           f"out={tmp_path / 'ft'}"]),
        "model.init_from": (train_main, [f"model.init_from={mt}", f"run_dir={tmp_path / 'run'}",
                                         f"data.cache_dir={tmp_path / 'cache'}"]),
    }
    for what, (main, argv) in runs.items():
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        err = capsys.readouterr().err
        assert exit_.value.code == 2, (what, err)
        assert err.startswith("error: ") and err.count("\n") == 1 and "a translation model" in err, (what, err)
        assert what.split()[0] in err and mt in err, (what, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pairs.jsonl"]
