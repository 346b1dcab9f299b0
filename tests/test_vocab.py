"""Vocabulary extension (`xlm_jax.data.vocab`, `python -m xlm_jax.tokenizer extend`): ids kept, rows kept, new rows
from the base split, <mask> moved, logits unchanged, and every refusal. Tiny tokenizers and models, in-process."""

import dataclasses
import hashlib
import json
import random
import subprocess
import sys
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tiny_setup
from xlm_jax.models.config import XLMR_SPECIALS, get_model_config
from xlm_jax.core.errors import UserError
from xlm_jax.models.xlm import XLMForMaskedLM, init_params
from xlm_jax.data.tokenizer import Tokenizer, train_tokenizer
from xlm_jax.tokenizer import main as tokenizer_main
from xlm_jax.data.vocab import compare_tokenization, extend_tokenizer, tokenization_stats
from xlm_jax.models.vocab_extension import base_split, extend_embeddings

GEORGIAN = "ქართული ენა არის ძალიან ლამაზი სიტყვა წიგნი სახლი ქალაქი მთა ზღვა".split()
# A "new language" in the base's own script: compounds of base words, which the base splits into known pieces.
COMPOUNDS = "dokumentfenster hundehaus katzeseite druckfehler fensterhund seitenfehler hauskatze".split()


def _write_text(path: Path, words: list[str], n: int, seed: int) -> Path:
    rng = random.Random(seed)
    path.write_text("\n".join(" ".join(rng.choice(words) for _ in range(7)) for _ in range(n)) + "\n")
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("vocab")
    base_path = tiny_setup.make_tokenizer(d)  # en / de / fr, 60 pieces
    ka = _write_text(d / "ka.txt", GEORGIAN, 300, 1)
    compounds = _write_text(d / "xx.txt", COMPOUNDS, 300, 2)
    checks = [str(d / f"{lang}.txt") for lang in ("en", "de", "fr")]
    report = extend_tokenizer(base_path, [str(ka)], 40, str(d / "ka.model"), check_inputs=checks,
                              report=str(d / "ka.json"))
    extend_tokenizer(base_path, [str(compounds)], 40, str(d / "xx.model"))
    return {"dir": d, "base": Tokenizer.load(base_path), "ka": Tokenizer.load(d / "ka.model"),
            "xx": Tokenizer.load(d / "xx.model"), "report": report, "checks": checks, "ka_text": ka}


def _sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# ------------------------------------------------------------------------------------------- the tokenizer


@pytest.mark.parametrize("name", ["ka", "xx"])
def test_existing_pieces_keep_ids_and_scores(setup, name):
    base, ext = setup["base"], setup[name]
    n = base.sp.get_piece_size()
    assert ext.sp.get_piece_size() > n
    for i in range(n):
        assert ext.sp.id_to_piece(i) == base.sp.id_to_piece(i)
        assert ext.sp.get_score(i) == base.sp.get_score(i)
    assert (ext.bos_id, ext.pad_id, ext.eos_id, ext.unk_id) == (0, 1, 2, 3)
    assert ext.mask_id == len(ext) - 1 > base.mask_id


def test_text_without_the_new_script_is_segmented_as_before(setup):
    base, ext = setup["base"], setup["ka"]
    for path in setup["checks"]:
        lines = Path(path).read_text().splitlines()
        assert [base.encode(t) for t in lines] == [ext.encode(t) for t in lines]
        c = setup["report"]["texts"][path]
        assert c["changed_sentences"] == 0 and c["ratio"] == 1.0 and c["new_pieces_used"] == 0
    # A mixed sentence: its Latin words keep their pieces, the Georgian ones stop being <unk>.
    mixed = "the cat ქართული ენა open file"
    head, tail = base.encode_pieces_ids("the cat"), base.encode_pieces_ids("open file")
    ids = ext.encode_pieces_ids(mixed)
    assert ids[: len(head)] == head and ids[-len(tail):] == tail and ids[len(head) : -len(tail)] == [
        ext.sp.piece_to_id(p) + 1 for p in ("▁ქართული", "▁ენა")]
    assert base.unk_id in base.encode(mixed) and ext.unk_id not in ext.encode(mixed)


def test_new_text_uses_the_new_pieces(setup):
    held = setup["report"]["texts"]["held-out new text"]
    assert held["before"]["unk"] > 0 and held["after"]["unk"] == 0
    assert held["new_pieces_used"] > 0 and held["changed_sentences"] == held["before"]["sentences"]
    ext = setup["ka"]
    assert ext.sp.encode("ქართული ენა", out_type=str) == ["▁ქართული", "▁ენა"]
    on_disk = json.loads((setup["dir"] / "ka.json").read_text())
    assert on_disk["added"] == len(on_disk["pieces"]) == len(ext) - len(setup["base"])
    assert on_disk["mask_id"] == [setup["base"].mask_id, ext.mask_id]
    assert (setup["dir"] / "ka.vocab").read_text().splitlines()[-1].split("\t")[0] == on_disk["pieces"][-1]


def test_new_characters_only(setup, tmp_path):
    """Georgian text with Latin program names in it (as in gettext catalogs): by default the Latin-only pieces the
    base lacks are added too and can change base text; --new-characters-only adds only pieces with a Georgian
    character, and base text keeps its exact segmentation."""
    latin = ["gnome", "nautilus", "totem", "gedit", "gnome shell"]  # only letters the base has (it has no 'x')
    rng = random.Random(5)
    mixed = tmp_path / "ka_mixed.txt"
    mixed.write_text("\n".join(" ".join(rng.choice(GEORGIAN + latin) for _ in range(8)) for _ in range(300)) + "\n")
    probe = tmp_path / "probe.txt"  # base-language text that happens to hold those names
    probe.write_text("\n".join(f"the {name} window" for name in latin) + "\n")
    base = setup["base"]
    georgian = set("".join(GEORGIAN))
    results = {}
    for only in (False, True):
        out = tmp_path / f"only{only}.model"
        results[only] = extend_tokenizer(base.path, [str(mixed)], 60, str(out), check_inputs=[*setup["checks"],
                                         str(probe)], new_characters_only=only)
        assert results[only]["new_characters_only"] is only
    assert any(not georgian.intersection(p) for p in results[False]["pieces"])
    assert results[False]["texts"][str(probe)]["changed_sentences"] > 0
    assert all(georgian.intersection(p) for p in results[True]["pieces"])
    for path in [*setup["checks"], str(probe)]:
        assert results[True]["texts"][path]["changed_sentences"] == 0
    assert results[True]["texts"]["held-out new text"]["after"]["unk"] == 0
    # A character the base lacks counts as new whatever its script: an upper-case letter here.
    upper = tmp_path / "upper.txt"
    upper.write_text("\n".join(f"{w} XEROX" for w in GEORGIAN * 30) + "\n")
    pieces = extend_tokenizer(base.path, [str(upper)], 60, str(tmp_path / "up.model"), new_characters_only=True)
    assert "X" in pieces["pieces"]
    with pytest.raises(UserError, match="no piece holding a character .* --new-characters-only"):
        extend_tokenizer(base.path, [str(setup["dir"] / "xx.txt")], 10, str(tmp_path / "no.model"),
                         new_characters_only=True)
    assert not (tmp_path / "no.model").exists()


def test_bpe_base(setup, tmp_path):
    d = setup["dir"]
    base_path = tmp_path / "bpe.model"
    train_tokenizer([str(d / f"{lang}.txt") for lang in ("en", "de", "fr")], 60, str(base_path), model_type="bpe")
    out = tmp_path / "bpe2.model"
    result = extend_tokenizer(base_path, [str(setup["ka_text"])], 30, str(out), check_inputs=setup["checks"])
    base, ext = Tokenizer.load(base_path), Tokenizer.load(out)
    assert [ext.sp.id_to_piece(i) for i in range(base.sp.get_piece_size())] == \
        [base.sp.id_to_piece(i) for i in range(base.sp.get_piece_size())]
    # New merges rank below every base merge, in their own order.
    scores = [ext.sp.get_score(i) for i in range(ext.sp.get_piece_size())]
    lowest = min(scores[3:base.sp.get_piece_size()])
    assert all(s < lowest for s in scores[base.sp.get_piece_size():])
    assert all(result["texts"][p]["changed_sentences"] == 0 for p in setup["checks"])
    assert result["texts"]["held-out new text"]["after"]["unk"] == 0


def test_stats_helpers(setup):
    base = setup["base"]
    s = tokenization_stats(base, ["the cat", "ქართული"])
    assert s["sentences"] == 2 and s["pieces"] == len(base.encode_pieces_ids("the cat")) + 2 and s["unk"] == 1
    assert s["pieces_per_sentence"] == s["pieces"] / 2
    c = compare_tokenization(base, setup["ka"], ["ქართული ენა"])
    assert c["before"]["unk"] == 2 and c["after"]["pieces"] == 2 and c["new_pieces_used"] == 2
    assert tokenization_stats(base, (t for t in ["the cat"]))["sentences"] == 1  # any iterable
    assert compare_tokenization(base, setup["ka"], [""])["ratio"] is None  # no pieces: no ratio, never NaN
    for bad, words in (([], "sentences is empty"), ("the cat", "must be a list of str"), (None, "must be a list"),
                       (["ok", 3], r"texts\[1\] must be a str"), ([b"bytes"], "must be a str")):
        with pytest.raises(UserError, match=words):
            tokenization_stats(base, bad)
        with pytest.raises(UserError, match=words):
            compare_tokenization(base, setup["ka"], bad)


# ------------------------------------------------------------------------------------------- the model rows


def _model(base: Tokenizer, seed: int = 0):
    """xlmr_tiny sized for `base`, every parameter (the LM-head bias included, which a trained head has non-zero)
    drawn at random in NumPy: the tree's shapes come from `jax.eval_shape`, so nothing is compiled."""
    cfg = get_model_config("xlmr_tiny", vocab_size=len(base))
    shapes = jax.eval_shape(lambda: nn.unbox(init_params(XLMForMaskedLM(cfg), jax.random.key(0))))
    rng = np.random.default_rng(seed)
    params = jax.tree_util.tree_map(lambda s: (0.1 * rng.standard_normal(s.shape)).astype(s.dtype), shapes)
    return cfg, params


@pytest.mark.parametrize("name", ["ka", "xx"])
def test_old_rows_kept_mask_moved_new_rows_mean(setup, name):
    base, ext = setup["base"], setup[name]
    cfg, params = _model(base)
    new_params, new_cfg = extend_embeddings(params, cfg, base, ext, "xlmr")
    assert new_cfg.vocab_size == len(ext) and new_cfg.mask_id == ext.mask_id
    assert dataclasses.replace(new_cfg, vocab_size=cfg.vocab_size) == cfg
    old_e, new_e = np.asarray(params["encoder"]["embeddings"]["word_embeddings"]["embedding"]), \
        new_params["encoder"]["embeddings"]["word_embeddings"]["embedding"]
    old_b, new_b = np.asarray(params["lm_head"]["bias"]), new_params["lm_head"]["bias"]
    v, v2 = len(base), len(ext)
    assert new_e.shape == (v2, cfg.hidden_size) and new_b.shape == (v2,)
    assert new_e.dtype == old_e.dtype and new_b.dtype == old_b.dtype
    assert np.array_equal(new_e[: v - 1], old_e[: v - 1]) and np.array_equal(new_b[: v - 1], old_b[: v - 1])
    assert np.array_equal(new_e[v2 - 1], old_e[v - 1]) and new_b[v2 - 1] == old_b[v - 1]
    # Every other leaf is the very same array (not a copy).
    same = jax.tree_util.tree_map(lambda a, b: a is b, new_params["encoder"]["layers"], params["encoder"]["layers"])
    assert all(jax.tree_util.tree_leaves(same)) and new_params["lm_head"]["dense"]["kernel"] is \
        params["lm_head"]["dense"]["kernel"]
    # The recipe, computed here from the tokenizer's public encode: a word-initial piece "▁w" is what the base
    # makes of the word "w"; <unk> stands for the mean of the base's piece rows (ids 4 .. V-2). The bias is the
    # split's mean minus log(number of new pieces) (was the plain mean before the output-side bound).
    prior_e, prior_b = old_e[4 : v - 1].mean(0), old_b[4 : v - 1].mean()
    shift = np.log(v2 - v)
    checked = 0
    for new_id in range(v - 1, v2 - 1):
        piece = ext.sp.id_to_piece(new_id - 1)
        if not piece.startswith("▁") or len(piece) == 1:
            continue
        split = base.encode_pieces_ids(piece[1:], special_tokens=False)
        want_e = np.mean([prior_e if i == 3 else old_e[i] for i in split], 0)
        want_b = np.mean([prior_b if i == 3 else old_b[i] for i in split]) - shift
        np.testing.assert_allclose(new_e[new_id], want_e, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(new_b[new_id], want_b, rtol=1e-6, atol=1e-7)
        checked += 1
    assert checked >= 5
    if name == "xx":  # Latin compounds: split into real base pieces, none of them <unk>
        splits = base_split(base, ext)
        assert any(len(s) > 1 and 3 not in s for s in splits.values())
    else:  # Georgian: every single character is unknown to the base, so it starts at the prior
        chars = [i for i in range(v - 1, v2 - 1) if len(ext.sp.id_to_piece(i - 1)) == 1]
        assert chars and all(np.allclose(new_e[i], prior_e, atol=1e-7) for i in chars)


def test_bfloat16_and_encoder_only_trees(setup):
    base, ext = setup["base"], setup["ka"]
    cfg, params = _model(base)
    bf16 = jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.bfloat16), params)
    out, _ = extend_embeddings(bf16, cfg, base, ext, "xlmr")
    table = out["encoder"]["embeddings"]["word_embeddings"]["embedding"]
    assert table.dtype == jnp.bfloat16
    old = np.asarray(bf16["encoder"]["embeddings"]["word_embeddings"]["embedding"])
    assert np.array_equal(table[: len(base) - 1].view(np.uint16), old[: len(base) - 1].view(np.uint16))
    encoder_only = {"encoder": params["encoder"], "classifier": {"w": np.zeros(3)}}
    out, new_cfg = extend_embeddings(encoder_only, cfg, base, ext, "xlmr")
    assert "lm_head" not in out and out["classifier"]["w"] is encoder_only["classifier"]["w"]
    assert out["encoder"]["embeddings"]["word_embeddings"]["embedding"].shape[0] == new_cfg.vocab_size


def test_boxed_tree_and_explicit_mask_id(setup):
    base, ext = setup["base"], setup["ka"]
    cfg = get_model_config("xlmr_tiny", vocab_size=len(base), mask_token_id=len(base) - 1)
    boxed = jax.eval_shape(lambda: init_params(XLMForMaskedLM(cfg), jax.random.key(0)))
    boxed = jax.tree_util.tree_map(lambda s: np.ones(s.shape, s.dtype), boxed)
    out, new_cfg = extend_embeddings(boxed, cfg, base, ext, "xlmr")
    assert new_cfg.mask_token_id == new_cfg.mask_id == ext.mask_id
    assert isinstance(out["encoder"]["embeddings"]["word_embeddings"]["embedding"], np.ndarray)


def test_xlm_family_with_fairseq_ids(setup):
    """An XLM-family model trained here (language embeddings, no head transform) has the xlmr id layout."""
    base, ext = setup["base"], setup["ka"]
    cfg = get_model_config("xlm_tiny", vocab_size=len(base), **XLMR_SPECIALS, mask_token_id=-1)
    shapes = jax.eval_shape(lambda: nn.unbox(init_params(XLMForMaskedLM(cfg), jax.random.key(0))))
    params = jax.tree_util.tree_map(lambda s: np.zeros(s.shape, s.dtype), shapes)
    out, new_cfg = extend_embeddings(params, cfg, base, ext, "xlmr")
    assert new_cfg.family == "xlm" and out["lm_head"]["bias"].shape == (len(ext),)
    with pytest.raises(UserError, match="pass layout='xlmr'"):
        extend_embeddings(params, cfg, base, ext, "xlm")


def test_transformers_reads_the_extended_model(setup, tmp_path):
    """What `convert --to hf` ships: XLMRobertaTokenizer on the extended file gives our ids, <mask> last."""
    transformers = pytest.importorskip("transformers")
    (tmp_path / "sentencepiece.bpe.model").write_bytes((setup["dir"] / "ka.model").read_bytes())
    hf = transformers.XLMRobertaTokenizer.from_pretrained(str(tmp_path))
    ext = setup["ka"]
    assert len(hf) == len(ext) and hf.mask_token_id == ext.mask_id
    texts = ["the cat ქართული ენა open file", "ძალიან <mask> წიგნი", *Path(setup["ka_text"]).read_text().splitlines()[:50],
             *Path(setup["checks"][1]).read_text().splitlines()[:50]]
    assert [ext.encode(t) for t in texts] == [hf(t)["input_ids"] for t in texts]


def test_logits_of_old_ids_unchanged(setup):
    base, ext = setup["base"], setup["ka"]
    cfg, params = _model(base, seed=3)
    new_params, new_cfg = extend_embeddings(params, cfg, base, ext, "xlmr")
    texts = ["the cat <mask> open file", "die katze öffnen <mask> datei", "le chat ouvrir"]
    old_batch = base.batch_encode(texts, max_len=32)
    new_batch = ext.batch_encode(texts, max_len=32)
    old_ids, new_ids = old_batch["input_ids"], new_batch["input_ids"]
    # Same ids but <mask>, which moved to the new last id.
    assert np.array_equal(np.where(old_ids == base.mask_id, ext.mask_id, old_ids), new_ids)
    assert (new_ids == ext.mask_id).sum() == 2
    old_logits = XLMForMaskedLM(cfg).apply({"params": params}, jnp.asarray(old_ids),
                                           jnp.asarray(old_batch["attention_mask"]), method="mlm_logits")
    new_logits = XLMForMaskedLM(new_cfg).apply({"params": new_params}, jnp.asarray(new_ids),
                                               jnp.asarray(new_batch["attention_mask"]), method="mlm_logits")
    # The encoder sees the same rows, so its states are bit-identical; the logits agree to float32 rounding only
    # (~1e-7: XLA blocks the vocabulary matmul differently for another vocabulary size).
    old_hidden = XLMForMaskedLM(cfg).apply({"params": params}, jnp.asarray(old_ids),
                                           jnp.asarray(old_batch["attention_mask"]))
    new_hidden = XLMForMaskedLM(new_cfg).apply({"params": new_params}, jnp.asarray(new_ids),
                                               jnp.asarray(new_batch["attention_mask"]))
    assert np.array_equal(old_hidden, new_hidden)
    v = len(base)
    np.testing.assert_allclose(new_logits[..., : v - 1], old_logits[..., : v - 1], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(new_logits[..., ext.mask_id], old_logits[..., base.mask_id], rtol=1e-6, atol=1e-6)
    # A fill-mask read-out over the old ids gives the same prediction at every <mask>.
    rows, cols = np.nonzero(new_ids == ext.mask_id)
    old_pick = np.asarray(old_logits)[rows, cols, : v - 1].argmax(-1)
    new_pick = np.asarray(new_logits)[rows, cols, : v - 1].argmax(-1)
    assert np.array_equal(old_pick, new_pick)


def test_extend_embeddings_refusals(setup, tmp_path):
    base, ext = setup["base"], setup["ka"]
    cfg, params = _model(base)
    other_path = tmp_path / "other.model"
    train_tokenizer([str(setup["dir"] / "de.txt")], 30, str(other_path))
    other = Tokenizer.load(other_path)
    table = params["encoder"]["embeddings"]["word_embeddings"]["embedding"]
    no_table = {"encoder": {"embeddings": {}}, "lm_head": params["lm_head"]}
    cases = [
        (dict(layout="xlm"), "fastBPE"),
        (dict(layout="xlm", config=get_model_config("xlm_tiny", vocab_size=len(base))), "fastBPE"),
        (dict(layout=None), "valid layouts"),
        (dict(base=str(setup["dir"] / "t.model")), "base must be an xlm_jax Tokenizer"),
        (dict(extended=None), "extended must be an xlm_jax Tokenizer"),
        (dict(config={"vocab_size": len(base)}), "config must be a ModelConfig"),
        (dict(layout="fairseq"), "valid layouts are 'xlmr', 'xlm'"),
        (dict(config=dataclasses.replace(cfg, vocab_size=cfg.vocab_size + 5)), f"{len(base)} ids"),
        (dict(config=dataclasses.replace(cfg, pad_token_id=2, eos_token_id=1)), "not the 'xlmr' layout"),
        (dict(config=dataclasses.replace(cfg, mask_token_id=5)), "not the 'xlmr' layout"),
        (dict(extended=base), "does not extend it"),
        (dict(extended=other), f"not more than the base's {len(base)}"),
        (dict(base=other, config=dataclasses.replace(cfg, vocab_size=len(other))), "is not an extension of"),
        (dict(params=no_table), "embeddings/word_embeddings/embedding is missing"),
        (dict(params={**params, "encoder": {**params["encoder"], "embeddings": {
            **params["encoder"]["embeddings"], "word_embeddings": {"embedding": table[:-1]}}}}), "of shape"),
        (dict(params={**params, "lm_head": {**params["lm_head"], "bias": params["lm_head"]["bias"][:-2]}}),
         "lm_head/bias has shape"),
    ]
    for change, words in cases:
        kwargs = dict(params=params, config=cfg, base=base, extended=ext, layout="xlmr") | change
        with pytest.raises(UserError, match=words.replace("(", r"\(").replace("'", "'")):
            extend_embeddings(**kwargs)


# ------------------------------------------------------------------------------------------- the command


def _run(argv, capsys):
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        tokenizer_main(["extend", "--quiet", *argv])
    err = capsys.readouterr().err
    return exit_info.value.code, err


def test_cli_writes_model_vocab_and_report(setup, tmp_path, capsys):
    d = setup["dir"]
    out = tmp_path / "sub" / "t2.model"
    zero_width = tmp_path / "zw.txt"  # text that normalises to nothing: no pieces, so no ratio ("-")
    zero_width.write_text("\u200b\n")
    tokenizer_main(["extend", "--quiet", "--base", str(d / "t.model"), "--input", str(setup["ka_text"]),
                    "--add", "25", "--output", str(out), "--check-input", setup["checks"][0],
                    "--check-input", setup["checks"][1], str(zero_width), "--report", str(tmp_path / "r.json")])
    printed = capsys.readouterr().out
    assert "added 25 pieces (ids 61..85)" in printed and "<mask> moved from id 61 to 86" in printed
    assert "held-out new text" in printed and "en.txt" in printed and "de.txt" in printed
    assert len(Tokenizer.load(out)) == len(setup["base"]) + 25
    assert (tmp_path / "sub" / "t2.vocab").is_file()
    texts = json.loads((tmp_path / "r.json").read_text())["texts"]
    assert set(texts) == {"held-out new text", *setup["checks"][:2], str(zero_width)}
    assert texts[str(zero_width)]["ratio"] is None and "zw.txt" in printed


def test_cli_refusals_write_nothing(setup, tmp_path, capsys):
    d = setup["dir"]
    base, ka = str(d / "t.model"), str(setup["ka_text"])
    existing = tmp_path / "existing.model"
    existing.write_bytes(b"keep me")
    blank = tmp_path / "blank.txt"
    blank.write_text("\n  \n\n")
    binary = tmp_path / "bin.txt"
    binary.write_bytes(b"\x00\x01\x02" * 100)
    zero_width = tmp_path / "zw.txt"  # NFKC drops the zero-width space: nothing left to learn from
    zero_width.write_text("\u200b\u200b\n\u200b \n")
    covered = tmp_path / "covered.txt"
    covered.write_text("the cat dog\n")
    not_spm = tmp_path / "text.model"
    not_spm.write_text("not a model\n")
    report_exists = tmp_path / "r.json"
    report_exists.write_text("{}")
    text_named_model = tmp_path / "text_in.model"  # new text whose name an output could take
    text_named_model.write_text(Path(ka).read_text())
    before = {p: _sha(p) for p in (existing, Path(base), Path(ka), report_exists, not_spm, text_named_model)}
    out = str(tmp_path / "out.model")
    cases = [
        (["--add", "0"], "must be an integer >= 1"),
        (["--add", "-3"], "must be an integer >= 1"),
        (["--add", "many"], "invalid value 'many'"),
        (["--add", "3000000000"], "at most"),
        (["--input", str(tmp_path / "missing.txt")], "missing.txt: no such corpus file"),
        (["--input", str(tmp_path)], "is a directory"),
        (["--input", str(blank)], "holds no text"),
        (["--input", str(zero_width)], "zw.txt holds nothing but whitespace once normalised"),
        (["--input", str(binary)], "not a text file"),
        (["--input", str(covered)], "covered.txt yields no piece that"),
        (["--input", str(covered), "--new-characters-only"], "yields no piece holding a character"),
        (["--check-input", str(tmp_path / "missing.txt")], "--check-input: "),
        (["--check-input", str(binary)], "not a text file"),
        (["--output", str(existing)], "exists; nothing was changed"),
        (["--output", base, "--force"], "overlaps the --base model"),
        (["--output", str(text_named_model), "--input", str(text_named_model), "--force"], "overlaps the --input"),
        (["--output", str(tmp_path / "out.txt")], "must end in .model"),
        (["--output", str(tmp_path)], "must end in .model"),
        (["--report", str(report_exists)], "r.json: exists"),
        (["--report", out], "one of the tokenizer's own output files"),
        (["--report", str(tmp_path)], "is a directory"),
        (["--output", str(blank / "t2.model")], "is a file, not a directory"),
        (["--base", str(tmp_path / "nope.model")], "does not exist"),
        (["--base", str(not_spm)], "not a SentencePiece model"),
        (["--base", str(tmp_path)], "is a directory"),
    ]
    for change, words in cases:
        args = {"--base": base, "--input": ka, "--add": "5", "--output": out}
        extra = []
        for i in range(0, len(change), 2):
            if change[i] in args:
                args[change[i]] = change[i + 1]
            else:
                extra += change[i : i + 2] if i + 1 < len(change) else change[i : i + 1]
        argv = [x for kv in args.items() for x in kv] + extra
        code, err = _run(argv, capsys)
        assert code == 2, (change, err)
        assert err.startswith("error: ") and err.count("\n") == 1 and words in err, (change, err)
        assert not Path(out).exists() and not (tmp_path / "out.vocab").exists(), change
        assert {p: _sha(p) for p in before} == before, change
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
            ["existing.model", "zw.txt", "blank.txt", "bin.txt", "covered.txt", "text.model", "r.json", "text_in.model"]), change


def test_cli_force_replaces_and_real_exit_path(setup, tmp_path):
    d = setup["dir"]
    out = tmp_path / "t2.model"
    out.write_bytes(b"old")
    cmd = [sys.executable, "-m", "xlm_jax.tokenizer", "extend", "--quiet", "--base", str(d / "t.model"),
           "--input", str(setup["ka_text"]), "--add", "5", "--output", str(out)]
    refused = subprocess.run(cmd, capture_output=True, text=True)
    assert refused.returncode == 2 and refused.stderr.startswith("error: ") and "--force" in refused.stderr
    assert "Traceback" not in refused.stderr and out.read_bytes() == b"old"
    tokenizer_main(["extend", "--quiet", "--base", str(d / "t.model"), "--input", str(setup["ka_text"]),
                    "--add", "5", "--output", str(out), "--force"])
    assert len(Tokenizer.load(out)) == len(setup["base"]) + 5


@pytest.mark.parametrize("name,seed", [("ka", 3), ("ka", 4), ("xx", 5)])
def test_new_id_mass_bounded_at_step_0(setup, name, seed):
    """The bound of `extend_embeddings`' docstring, at every position of several inputs: with M the probability on
    the new ids and q the mean base probability of the new pieces' split pieces (<unk> read as the mean base
    piece probability), M / (1 - M) <= q <= 1; and the old ids keep the base distribution scaled by 1 - M."""
    base, ext = setup["base"], setup[name]
    cfg, params = _model(base, seed=seed)
    # A head that strongly favours one piece everywhere (as `▁` in a small trained model): the case the plain
    # split mean turned into most of the probability on the new ids.
    favourite = base.sp.piece_to_id("▁") + 1
    params["lm_head"]["bias"][favourite] += 6.0
    new_params, new_cfg = extend_embeddings(params, cfg, base, ext, "xlmr")
    texts = ["the cat <mask> open file", "die katze öffnen <mask> datei", "ქართული <mask> ენა წიგნი",
             "le chat ouvrir"]
    old_b, new_b = base.batch_encode(texts, max_len=32), ext.batch_encode(texts, max_len=32)
    old = np.asarray(XLMForMaskedLM(cfg).apply({"params": params}, jnp.asarray(old_b["input_ids"]),
                                               jnp.asarray(old_b["attention_mask"]), method="mlm_logits"), np.float64)
    new = np.asarray(XLMForMaskedLM(new_cfg).apply({"params": new_params}, jnp.asarray(new_b["input_ids"]),
                                                   jnp.asarray(new_b["attention_mask"]), method="mlm_logits"),
                     np.float64)
    v, v2 = len(base), len(ext)
    p_old = np.exp(old - old.max(-1, keepdims=True))
    p_old /= p_old.sum(-1, keepdims=True)
    p_new = np.exp(new - new.max(-1, keepdims=True))
    p_new /= p_new.sum(-1, keepdims=True)
    # Only positions whose context is the same for both tokenizers (Georgian is <unk> in the base): the rows
    # before the first Georgian text hold the same ids but <mask>.
    same = [r for r in range(len(texts)) if np.array_equal(
        np.where(old_b["input_ids"][r] == base.mask_id, ext.mask_id, old_b["input_ids"][r]), new_b["input_ids"][r])]
    assert len(same) >= 3
    splits = base_split(base, ext)
    for r in same:
        for c in np.nonzero(new_b["attention_mask"][r])[0]:
            p = p_old[r, c]
            p_unk = p[4 : v - 1].mean()
            q = np.mean([np.mean([p_unk if i == 3 else p[i] for i in split]) for split in splits.values()])
            mass = p_new[r, c, v - 1 : v2 - 1].sum()
            assert mass / (1 - mass) <= q * (1 + 1e-4) + 1e-7 and mass <= 0.5
            # The old ids: the base distribution (<mask> at its new id) scaled by 1 - M.
            np.testing.assert_allclose(p_new[r, c, : v - 1], p[: v - 1] * (1 - mass), rtol=1e-4, atol=1e-9)
    # The favourite piece dominates; the new ids stay far below it (the old recipe gave them most of the mass).
    masks = new_b["input_ids"] == ext.mask_id
    masks[[r for r in range(len(texts)) if r not in same]] = False
    assert p_new[masks][:, v - 1 : v2 - 1].sum(-1).max() < 0.5 * p_new[masks][:, favourite].min()
