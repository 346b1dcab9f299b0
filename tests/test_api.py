"""The notebook API refuses what the model cannot represent (issue #10, kind 3): every entry point that takes ids
(`LoadedModel.hidden_states`, `.layer_states`, `.mlm_logits`, `evaluate.embed_sentences`) raises UserError
naming the value and the valid range, before anything is compiled; inputs on the boundary still work and are
finite."""

from __future__ import annotations

import flax.linen as nn
import jax
import numpy as np
import pytest

import tiny_setup  # tests/tiny_setup.py

import xlm_jax
from xlm_jax.api import LoadedModel
from xlm_jax.models.config import get_model_config
from xlm_jax.core.errors import UserError
from xlm_jax.models.xlm import XLMForMaskedLM, init_params

POSITIONS = 64  # as a converted HF model with max_position_embeddings=66 (XLM-R keeps 2 rows for padding)
METHODS = ("hidden_states", "layer_states", "mlm_logits")


def _model(name: str) -> LoadedModel:
    cfg = get_model_config(name, max_positions=POSITIONS)
    # Jitted: one compilation is faster than initialising op by op.
    return LoadedModel(cfg, nn.unbox(jax.jit(lambda key: init_params(XLMForMaskedLM(cfg), key))(jax.random.key(0))))


@pytest.fixture(scope="module")
def models():
    """xlmr: pad-aware positions, no language embeddings; xlm: every slot a position, 3 languages."""
    return {"xlmr": _model("xlmr_tiny"), "xlm": _model("xlm_tiny")}


def _ids(m: LoadedModel, rows: int = 2, length: int = 6) -> np.ndarray:
    ids = np.full((rows, length), 7, np.int64)
    ids[:, 0] = m.config.bos_token_id
    return ids


def _refused(call, *words: str) -> str:
    with pytest.raises(UserError) as err:
        call()
    message = str(err.value)
    for word in words:
        assert word in message, (word, message)
    return message


def _finite(x) -> bool:
    return bool(np.isfinite(np.asarray(x, np.float32)).all())


# ----------------------------------------------------------------------------------------- token ids

@pytest.mark.parametrize("family", ["xlmr", "xlm"])
def test_ids_outside_the_vocabulary_are_refused(models, family):
    m = models[family]
    vocab = m.config.vocab_size
    for method in METHODS:
        for bad in (vocab, vocab + 12345, -1, -vocab, 2**32 + 7):
            ids = _ids(m)
            ids[1, 3] = bad  # 2**32 + 7 would wrap to 7 if it were cast to int32 before the check
            _refused(lambda: getattr(m, method)(ids), f"input_ids[1, 3] = {bad}", f"[0, {vocab - 1}]",
                     f"vocab_size {vocab}")
    ids = _ids(m)
    ids[0, 1:] = vocab - 1
    ids[1, 1:] = 0
    assert _finite(m.hidden_states(ids)) and _finite(m.mlm_logits(ids))


def test_refused_before_anything_is_compiled(models):
    m = LoadedModel(models["xlmr"].config, models["xlmr"].params)
    ids = _ids(m)
    ids[0, 2] = m.config.vocab_size
    for method in METHODS:
        _refused(lambda: getattr(m, method)(ids), "input_ids[0, 2]")
    assert "_forward" not in m.__dict__ and "_logits" not in m.__dict__  # the jitted functions were never built


# ----------------------------------------------------------------------------------------- positions

def test_xlmr_positions_count_real_tokens(models):
    m = models["xlmr"]
    for method in METHODS:
        for length in (POSITIONS + 1, POSITIONS + 40):
            _refused(lambda: getattr(m, method)(_ids(m, 2, length)), f"has {length} real tokens",
                     f"{POSITIONS} positions", "max_positions", f"max_len={POSITIONS}")
        mask = np.ones((1, POSITIONS + 10), np.int32)
        mask[0, 3] = 0
        _refused(lambda: getattr(m, method)(_ids(m, 1, POSITIONS + 10), mask), f"has {POSITIONS + 9} real tokens")
    # Padding takes no position in XLM-R (fairseq / HF count only real tokens): 64 real + 10 pads is fine.
    ids = np.full((2, POSITIONS + 10), m.config.pad_token_id)
    ids[0, :POSITIONS] = 7
    ids[1, :3] = 7
    assert _finite(m.hidden_states(ids)) and _finite(m.mlm_logits(ids[:, :POSITIONS]))


def test_xlm_positions_count_every_slot(models):
    m = models["xlm"]
    ids = np.full((1, POSITIONS + 1), m.config.pad_token_id)
    ids[0, :5] = 7
    for method in METHODS:
        for bad in (_ids(m, 1, POSITIONS + 1), ids):  # XLM numbers padding slots too
            _refused(lambda: getattr(m, method)(bad), f"length {POSITIONS + 1}", f"{POSITIONS} positions",
                     "max_positions")
    assert _finite(m.hidden_states(_ids(m, 2, POSITIONS))) and _finite(m.mlm_logits(_ids(m, 2, POSITIONS)))


# ------------------------------------------------------------------------------------------------ langs

def test_langs_out_of_range_or_misshapen(models):
    m = models["xlm"]
    ids = _ids(m)
    for bad in (3, 7, -1):
        langs = np.zeros_like(ids)
        langs[1, 4] = bad
        _refused(lambda: m.hidden_states(ids, langs=langs), f"langs[1, 4] = {bad}", "[0, 2]", "de=0, en=1, fr=2")
    _refused(lambda: m.hidden_states(ids, langs=np.zeros((2, 5), int)), "langs has shape (2, 5)", "(2, 6)")
    _refused(lambda: m.hidden_states(ids, langs="en"), "langs", "integer", "config.langs")
    _refused(lambda: m.hidden_states(ids, langs=np.zeros(ids.shape)), "langs", "float64")
    assert _finite(m.mlm_logits(ids, langs=np.full(ids.shape, 2)))
    assert _finite(m.hidden_states(ids))  # langs are optional, as in HF's XLMModel


def test_langs_for_a_model_without_language_embeddings(models):
    m = models["xlmr"]
    ids = _ids(m)
    for langs in (np.zeros_like(ids), np.full(ids.shape, 5)):
        _refused(lambda: m.hidden_states(ids, langs=langs), "langs given", "no language embeddings", "leave langs out")


# --------------------------------------------------------------------------------- shapes and dtypes

@pytest.mark.parametrize("family", ["xlmr", "xlm"])
def test_shapes_and_dtypes(models, family):
    m = models[family]
    ids = _ids(m)
    cases = [
        (lambda: m.hidden_states(ids.astype(np.float32)), ("input_ids", "integer", "float32")),
        (lambda: m.hidden_states("Open the file"), ("input_ids", "text", "Tokenizer")),
        (lambda: m.hidden_states(ids > 3), ("input_ids", "integer", "bool")),
        (lambda: m.hidden_states([[0, 5, 6], [0, 5]]), ("input_ids", "different lengths", "pad")),
        (lambda: m.hidden_states(ids[None]), ("input_ids", "[batch, length]", "(1, 2, 6)")),
        (lambda: m.hidden_states(5), ("input_ids", "shape ()")),
        (lambda: m.hidden_states(None), ("input_ids is None",)),
        (lambda: m.hidden_states(np.zeros((0, 6), int)), ("input_ids is empty", "(0, 6)")),
        (lambda: m.layer_states(np.zeros((2, 0), int)), ("input_ids is empty", "(2, 0)")),
        (lambda: m.mlm_logits([]), ("input_ids is empty",)),
        (lambda: m.hidden_states(ids, np.ones((2, 5), int)), ("attention_mask has shape (2, 5)", "(2, 6)")),
        (lambda: m.hidden_states(ids, np.ones((1, 6), int)), ("attention_mask has shape (1, 6)",)),
        (lambda: m.hidden_states(ids, np.full(ids.shape, 2)), ("attention_mask[0, 0] = 2", "1", "0")),
        (lambda: m.hidden_states(ids, -np.ones(ids.shape, int)), ("attention_mask[0, 0] = -1",)),
        (lambda: m.hidden_states(ids, np.ones(ids.shape)), ("attention_mask", "integer", "float64")),
    ]
    for call, words in cases:
        _refused(call, *words)
    # Accepted: one [length] row, nested lists, any integer dtype, a bool mask.
    one = np.asarray(m.hidden_states(ids[0]))
    assert one.shape == (1, 6, m.config.hidden_size) and _finite(one)
    np.testing.assert_allclose(np.asarray(m.hidden_states(ids.tolist())),
                               np.asarray(m.hidden_states(ids.astype(np.uint16))))
    np.testing.assert_allclose(np.asarray(m.hidden_states(ids, np.ones(ids.shape, bool))),
                               np.asarray(m.hidden_states(ids, np.ones(ids.shape, np.int8))))


# ----------------------------------------------------------------------------- checkpoints without an LM head

def test_mlm_logits_on_a_fine_tuned_classifier(models):
    # What xlm_jax.finetune saves and xlm_jax.load returns: params {"encoder", "classifier"}.
    base = models["xlmr"]
    head = {"out_proj": {"kernel": np.zeros((base.config.hidden_size, 3), np.float32), "bias": np.zeros(3, np.float32)}}
    m = LoadedModel(base.config, {"encoder": base.params["encoder"], "classifier": head})
    ids = _ids(m)
    _refused(lambda: m.mlm_logits(ids), "no masked-LM head", "classifier", "encoder", "hidden_states",
             "layer_states", "predict")
    assert _finite(m.hidden_states(ids))


def test_converted_hf_sequence_classifier(tmp_path):
    """The issue's own examples: a converted XLMRobertaForSequenceClassification with 64 positions."""
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("torch")
    hf_cfg = transformers.XLMRobertaConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                           intermediate_size=37, max_position_embeddings=66, num_labels=3)
    transformers.XLMRobertaForSequenceClassification(hf_cfg).save_pretrained(tmp_path / "hf")
    m = xlm_jax.load(tmp_path / "hf")
    assert m.config.max_positions == POSITIONS
    # The head comes along (issue 20): the task and labels of the HF classifier, not the encoder alone.
    assert (m.task.task, m.task.labels) == ("classification", ("LABEL_0", "LABEL_1", "LABEL_2"))
    _refused(lambda: m.mlm_logits(_ids(m)), "no masked-LM head", "fine-tuned classifier head", "hidden_states",
             "layer_states", "predict(texts)")
    _refused(lambda: m.hidden_states(_ids(m, 1, 65)), "65 real tokens", "64 positions")
    _refused(lambda: m.hidden_states(np.full((1, 4), 99)), "input_ids[0, 0] = 99", "[0, 98]")
    ids = _ids(m, 1, POSITIONS)
    ids[0, -1] = 98
    assert _finite(m.hidden_states(ids))


# ------------------------------------------------------------------------------------ embed_sentences

def test_embed_sentences_inputs(models, tmp_path):
    from xlm_jax.evaluate import embed_sentences
    from xlm_jax.data.tokenizer import Tokenizer

    tok = Tokenizer.load(tiny_setup.make_tokenizer(tmp_path))
    m = models["xlmr"]
    for max_len in (0, 1, 2):
        _refused(lambda: embed_sentences(m, tok, ["the cat"], max_len=max_len), f"max_len={max_len}", ">= 3")
    _refused(lambda: embed_sentences(m, tok, ["the cat", None]), "texts[1]", "str")
    out = embed_sentences(m, tok, ["the cat " * 50, "die katze", "<mask>"], max_len=3)
    assert out.shape == (3, m.config.hidden_size) and np.isfinite(out).all()
    # A tokenizer with more ids than the model: its top ids cannot be embedded.
    small = LoadedModel(m.config.replace(vocab_size=40), None)
    _refused(lambda: small.hidden_states([tok.encode("<mask>")]), f"= {tok.mask_id}", "[0, 39]")


# ===================================================================================== the text API (issue #11)

import json  # noqa: E402
import shutil  # noqa: E402
import warnings  # noqa: E402

from xlm_jax.api import Fill, Prediction, bucket  # noqa: E402


def _save_task(out, tok_path, base_params, cfg, task: str, labels: tuple[str, ...], seed: int = 1):
    """A fine-tuning output as `xlm_jax.finetune` writes it (its own save_best + finetune_config.json)."""
    from xlm_jax.workflows.loading import TaskInfo
    from xlm_jax.workflows.finetune import FINETUNE_CONFIG, FinetuneConfig, save_best

    info = TaskInfo(task, labels, 32)
    rng = np.random.default_rng(seed)
    dense = lambda n_in, n_out: {"kernel": rng.normal(0, 0.5, (n_in, n_out)).astype(np.float32),  # noqa: E731
                                 "bias": rng.normal(0, 0.5, n_out).astype(np.float32)}
    h = cfg.hidden_size  # the heads of xlm_jax.models.xlm: XLM-R's sequence head has dense + out_proj, the token head out_proj
    head = {"out_proj": dense(h, len(labels))} | ({"dense": dense(h, h)} if info.spec.kind == "sequence" else {})
    out.mkdir(parents=True)
    save_best(out, {"encoder": base_params["encoder"], "classifier": head}, cfg, info, 7)
    (out / FINETUNE_CONFIG).write_text(json.dumps({**dataclasses_asdict(FinetuneConfig()), "task": task,
                                                   "tokenizer": str(tok_path), "out": str(out)}))
    return out


def dataclasses_asdict(x):
    import dataclasses

    return dataclasses.asdict(x)


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    """A tiny tokenizer (62 ids) and, on one random xlmr_tiny encoder: a pretraining run directory, a
    classification and an NER fine-tuning output, and an XLM (language embeddings) run."""
    from xlm_jax.training.checkpoint import save_params

    d = tmp_path_factory.mktemp("outputs")
    tok = tiny_setup.make_tokenizer(d)
    cfg = get_model_config("xlmr_tiny")
    params = nn.unbox(jax.jit(lambda key: init_params(XLMForMaskedLM(cfg), key))(jax.random.key(0)))
    params = jax.tree_util.tree_map(np.asarray, params)
    run = d / "run"
    save_params(run / "checkpoints", params, cfg, step=5)
    shutil.copy(tok, run / "tokenizer.model")
    xcfg = get_model_config("xlm_tiny").replace(bos_token_id=0, pad_token_id=1, eos_token_id=2, unk_token_id=3,
                                                mask_token_id=61)  # the tokenizer's ids (62, <mask> last)
    xparams = nn.unbox(jax.jit(lambda key: init_params(XLMForMaskedLM(xcfg), key))(jax.random.key(1)))
    xrun = d / "xlm_run"
    save_params(xrun / "checkpoints", jax.tree_util.tree_map(np.asarray, xparams), xcfg, step=3)
    shutil.copy(tok, xrun / "tokenizer.model")
    return {"dir": d, "tok": tok, "run": run, "xlm_run": xrun, "cfg": cfg, "params": params,
            "cls": _save_task(d / "ft_cls", tok, params, cfg, "classification", ("file", "other")),
            "ner": _save_task(d / "ft_ner", tok, params, cfg, "ner", ("O", "B-LOC", "I-LOC"), seed=2),
            "pair": _save_task(d / "ft_pair", tok, params, cfg, "pawsx", ("0", "1"), seed=3)}


@pytest.fixture(scope="module")
def run_model(outputs):
    return xlm_jax.load(outputs["run"])


# ------------------------------------------------------------------------------------------------- load

def test_load_carries_the_tokenizer_of_every_output(outputs, tmp_path):
    from xlm_jax.workflows.convert import convert

    run = outputs["run"]
    for path in (run, run / "checkpoints", run / "checkpoints" / "5"):
        m = xlm_jax.load(path)
        assert m.tokenizer is not None and m.tokenizer.path == str(run / "tokenizer.model") and m.task is None
    for name in ("cls", "ner"):
        out = outputs[name]
        for path in (out, out / "best", out / "best" / "7"):
            m = xlm_jax.load(path)
            assert m.task is not None and m.task.task == ("ner" if name == "ner" else "classification")
            assert "classifier" in m.params and m.tokenizer.path == str(outputs["tok"])
    # convert outputs, both ways, keep the tokenizer: the HF one under XLM-R's name.
    convert(run, tmp_path / "hf", to="hf")
    assert (tmp_path / "hf" / "sentencepiece.bpe.model").read_bytes() == outputs["tok"].read_bytes()
    convert(tmp_path / "hf", tmp_path / "back")
    for path in (tmp_path / "hf", tmp_path / "back"):
        m = xlm_jax.load(path)
        assert m.tokenizer is not None and len(m.tokenizer) == 62
        np.testing.assert_allclose(m.embed(["the cat"]), xlm_jax.load(run).embed(["the cat"]), atol=1e-6)
    # tokenizer= overrides; tokenizer=False carries none.
    other = tmp_path / "other.model"
    shutil.copy(outputs["tok"], other)
    assert xlm_jax.load(run, tokenizer=other).tokenizer.path == str(other)
    assert xlm_jax.load(run, tokenizer=xlm_jax.Tokenizer.load(other)).tokenizer.path == str(other)
    assert xlm_jax.load(run, tokenizer=False).tokenizer is None


def test_fine_tuning_output_whose_tokenizer_moved(outputs, tmp_path):
    out = shutil.copytree(outputs["cls"], tmp_path / "ft")
    record = json.loads((out / "finetune_config.json").read_text())
    (out / "finetune_config.json").write_text(json.dumps({**record, "tokenizer": str(tmp_path / "gone.model")}))
    m = xlm_jax.load(out)
    assert m.tokenizer is None and m.task.labels == ("file", "other")
    _refused(lambda: m.predict(["the cat"]), "predict needs a tokenizer", "gone.model", "no longer exists",
             "tokenizer=")
    assert xlm_jax.load(out, tokenizer=outputs["tok"]).predict("the cat").label in ("file", "other")


def test_load_foreign_formats(outputs, tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    import test_convert as tc

    cfg = transformers.XLMRobertaConfig(vocab_size=62, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                        intermediate_size=37, max_position_embeddings=66, type_vocab_size=1)
    model = tc._randomize(transformers.XLMRobertaForMaskedLM(cfg))
    (tmp_path / "fs").mkdir()
    torch.save({"model": tc._fairseq_state(model, False), "args": None}, tmp_path / "fs" / "model.pt")
    with pytest.raises(UserError, match="attention heads"):
        xlm_jax.load(tmp_path / "fs")  # fairseq without args: convert's own error, unchanged
    import argparse

    args = argparse.Namespace(encoder_layers=2, encoder_embed_dim=32, encoder_ffn_embed_dim=37,
                              encoder_attention_heads=4, max_positions=64)
    torch.save({"model": tc._fairseq_state(model, False), "args": args}, tmp_path / "fs" / "model.pt")
    assert xlm_jax.load(tmp_path / "fs").tokenizer is None
    shutil.copy(outputs["tok"], tmp_path / "fs" / "sentencepiece.bpe.model")
    for path in (tmp_path / "fs", tmp_path / "fs" / "model.pt"):
        m = xlm_jax.load(path)
        assert len(m.tokenizer) == 62 and len(m.fill_mask("the <mask>", top_k=3)[0]) == 3
    # XLM .pth: Moses + fastBPE cannot be carried; the array methods work, the text methods say why not.
    xlm = transformers.XLMWithLMHeadModel(transformers.XLMConfig(
        vocab_size=99, emb_dim=32, n_layers=2, n_heads=4, n_langs=3, use_lang_emb=True, max_position_embeddings=64))
    tc._xlm_pth(tc._randomize(xlm), tmp_path / "mlm.pth")
    m = xlm_jax.load(tmp_path / "mlm.pth")
    assert m.tokenizer is None and m.hidden_states([[0, 5, 6, 1]]).shape == (1, 4, 32)
    for call in (lambda: m.embed(["hello"], lang="en"), lambda: m.fill_mask(["a <mask>"], lang="en")):
        _refused(call, "needs a tokenizer", "Moses", "fastBPE", "tokenizer=", "array methods")


def test_load_bad_input(outputs, tmp_path):
    from xlm_jax.training.checkpoint import save_params

    small = get_model_config("xlmr_tiny", vocab_size=40, num_layers=1)
    save_params(tmp_path / "small" / "checkpoints", nn.unbox(init_params(XLMForMaskedLM(small), jax.random.key(0))),
                small)
    _refused(lambda: xlm_jax.load(tmp_path / "small", tokenizer=outputs["tok"]), "62 ids", "vocabulary has 40")
    shutil.copy(outputs["tok"], tmp_path / "small" / "tokenizer.model")
    _refused(lambda: xlm_jax.load(tmp_path / "small"), "62 ids", "vocabulary has 40")
    _refused(lambda: xlm_jax.load(outputs["run"], tokenizer=tmp_path / "nope.model"), "nope.model", "does not exist")
    _refused(lambda: xlm_jax.load(outputs["run"], tokenizer=3), "tokenizer=3", "SentencePiece")
    _refused(lambda: xlm_jax.load(tmp_path / "missing"), "no such file or directory")
    _refused(lambda: xlm_jax.load(""), "non-empty")
    (tmp_path / "junk.txt").write_bytes(b"\x00\x01junk")
    _refused(lambda: xlm_jax.load(tmp_path / "junk.txt"), "junk.txt", "not a recognised checkpoint")
    (tmp_path / "junk.pt").write_bytes(b"\x00\x01junk")
    _refused(lambda: xlm_jax.load(tmp_path / "junk.pt"), "junk.pt", "not a PyTorch checkpoint")
    broken = shutil.copytree(outputs["run"], tmp_path / "broken_run")
    (broken / "tokenizer.model").write_bytes(b"not spm")
    _refused(lambda: xlm_jax.load(broken), "not a SentencePiece model", "tokenizer=")
    assert xlm_jax.load(broken, tokenizer=False).tokenizer is None


# --------------------------------------------------------------------------------------------- fill_mask

def test_fill_mask(run_model):
    m = run_model
    one = m.fill_mask("the cat <mask> house", top_k=4)
    assert len(one) == 1 and len(one[0]) == 4 and all(isinstance(f, Fill) for f in one[0])
    probs = [f.probability for f in one[0]]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1
    specials = {0, 1, 2, 3, m.tokenizer.mask_id}
    for f in one[0]:
        assert f.id not in specials and f.id < len(m.tokenizer) and f.piece == m.tokenizer.sp.id_to_piece(f.id - 1)
        assert f.token == m.tokenizer.decode([f.id])
    many = m.fill_mask(["<mask> cat <mask>", "the cat <mask> house", "die <mask>"], top_k=2)
    assert [len(x) for x in many] == [2, 1, 1] and [f.id for f in many[1][0]] == [f.id for f in one[0][:2]]
    np.testing.assert_allclose([f.probability for f in many[1][0]], probs[:2], rtol=1e-5)  # another batch shape
    # Against mlm_logits: the same top candidate and probability.
    ids = np.asarray([m.tokenizer.encode("the cat <mask> house")])
    pos = int(np.flatnonzero(ids[0] == m.tokenizer.mask_id)[0])
    p = np.array(jax.nn.softmax(m.mlm_logits(ids)[0, pos]))
    p[list(specials)] = -1
    p[len(m.tokenizer):] = -1
    assert one[0][0].id == int(p.argmax()) and abs(one[0][0].probability - p.max()) < 1e-6


def test_fill_mask_bad_input(run_model, outputs):
    m = run_model
    _refused(lambda: m.fill_mask("the cat"), "has no <mask>", "the cat")
    _refused(lambda: m.fill_mask(["a <mask>", "no mask here"]), "texts[1]", "has no <mask>")
    n = len(m.tokenizer) - 5
    for k in (0, -1, n + 1, 10**6, 2.5, True):
        _refused(lambda: m.fill_mask("a <mask>", top_k=k), f"top_k={k!r}", f"[1, {n}]")
    assert len(m.fill_mask("a <mask>", top_k=n)[0]) == n
    _refused(lambda: m.fill_mask("a <mask>", lang="en"), "lang='en'", "no language embeddings")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # refused before anything is truncated: no warning first
        _refused(lambda: m.fill_mask("the " * 200 + "<mask>"), "text:", "<mask> at piece 201", "128 positions",
                 "126 pieces")
        _refused(lambda: m.fill_mask(["a <mask>", "<mask> " + "the " * 125 + "<mask>"]), "texts[1]", "piece 127")
    with pytest.warns(UserWarning, match="1 of 1 texts"):
        assert len(m.fill_mask("<mask> " + "the " * 124 + "<mask> the the")) == 2  # piece 126: the last one kept
    cls = xlm_jax.load(outputs["cls"])
    _refused(lambda: cls.fill_mask("a <mask>"), "no masked-LM head", "predict")


def test_xlm_language_embeddings(outputs):
    m = xlm_jax.load(outputs["xlm_run"])
    for lang in ("en", "de", ["en", "fr"]):
        texts = ["the cat", "die katze"]
        assert m.embed(texts, lang=lang).shape == (2, 64)
    assert not np.allclose(m.embed(["the cat"], lang="en"), m.embed(["the cat"], lang="fr"))
    assert len(m.fill_mask("the <mask>", lang="en")[0]) == 5
    _refused(lambda: m.embed(["the cat"]), "language embeddings", "lang=", "de, en, fr")
    _refused(lambda: m.embed(["the cat"], lang="es"), "lang='es'", "de, en, fr")
    _refused(lambda: m.embed(["a", "b"], lang=["en"]), "list of 2")
    _refused(lambda: m.embed(["a", "b"], lang=["en", 5]), "lang[1]=5", "de, en, fr")
    _refused(lambda: m.fill_mask("the <mask>", lang="xx"), "lang='xx'")


# ------------------------------------------------------------------------------------ embed / similarity

def test_embed_similarity_retrieve(run_model):
    from xlm_jax.evaluate import embed_sentences

    m = run_model
    texts = ["the cat", "die katze öffnen datei", "le chat chien maison " * 3]
    e = m.embed(texts)
    assert e.shape == (3, 64) and e.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1, atol=1e-6)
    raw = m.embed(texts, normalize=False)
    np.testing.assert_allclose(raw, embed_sentences(m, m.tokenizer, texts), atol=1e-6)  # one implementation
    np.testing.assert_allclose(m.embed("the cat"), e[:1], atol=1e-6)  # a str is a list of one
    # mean pooling over the real tokens of layer L, by hand from layer_states.
    ids = np.asarray([m.tokenizer.encode(texts[0])])
    for layer in (1, 2, -1, -2):
        index = layer - 1 if layer > 0 else 2 + layer
        want = np.asarray(m.layer_states(ids))[index, 0].mean(0)
        np.testing.assert_allclose(m.embed(texts[:1], layer=layer, normalize=False)[0], want, atol=1e-5)
    cls = m.embed(texts[:1], pooling="cls", normalize=False)[0]
    np.testing.assert_allclose(cls, np.asarray(m.hidden_states(ids))[0, 0], atol=1e-5)
    sim = m.similarity(texts, texts[:2])
    assert sim.shape == (3, 2) and sim.dtype == np.float32
    np.testing.assert_allclose(sim, e @ e[:2].T, atol=1e-5)
    idx, scores = m.retrieve(texts[:2], texts, k=3)
    assert idx.shape == scores.shape == (2, 3) and (idx[:, 0] == [0, 1]).all()
    assert (np.diff(scores, axis=1) <= 1e-7).all()


def test_embed_bad_input(run_model):
    m = run_model
    cases = [
        (lambda: m.embed([]), ("texts is empty",)),
        (lambda: m.embed(["a", 5]), ("texts[1]", "str", "int")),
        (lambda: m.embed([None]), ("texts[0]", "NoneType")),
        (lambda: m.embed(["a", b"b"]), ("texts[1]", "bytes")),
        (lambda: m.embed(5), ("texts", "int")),
        (lambda: m.embed(["a\ud800"]), ("surrogate",)),
        (lambda: m.embed(["a"], pooling="max"), ("pooling='max'", "'mean', 'cls'")),
        (lambda: m.embed(["a"], pooling="Mean"), ("pooling='Mean'", "did you mean")),
        (lambda: m.embed(["a"], layer=0), ("layer=0", "1..2", "-1..-2")),
        (lambda: m.embed(["a"], layer=3), ("layer=3", "1..2")),
        (lambda: m.embed(["a"], layer=-3), ("layer=-3",)),
        (lambda: m.embed(["a"], layer=1.0), ("layer=1.0",)),
        (lambda: m.similarity([], ["a"]), ("texts is empty",)),
        (lambda: m.retrieve(["a"], ["b", "c"], k=3), ("k=3", "[1, 2]", "number of candidates")),
        (lambda: m.retrieve(["a"], ["b", "c"], k=0), ("k=0", "[1, 2]")),
        (lambda: m.retrieve(["a"], [], k=1), ("texts is empty",)),
    ]
    for call, words in cases:
        _refused(call, *words)


def test_long_texts_are_truncated_with_a_warning(run_model, outputs):
    m = run_model
    long = "the cat dog house " * 100
    with pytest.warns(UserWarning, match=r"1 of 2 texts were longer than the model's 128 positions.*truncated") as w:
        e = m.embed([long, "the cat"])
    assert w[0].filename == __file__  # attributed to the caller's line, not to xlm_jax
    assert np.isfinite(e).all()
    cut = m.tokenizer.decode(m.tokenizer.encode(long)[:127])  # the first 126 pieces
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        np.testing.assert_allclose(e[0], m.embed([cut])[0], atol=1e-5)
    with pytest.warns(UserWarning, match="1 of 1 texts"):
        assert np.isfinite(m.similarity([long], ["a"])).all()
    with pytest.warns(UserWarning, match="1 of 1 texts"):
        m.fill_mask("<mask> " + long)
    with pytest.warns(UserWarning, match="1 of 1 texts"):
        xlm_jax.load(outputs["cls"]).predict([long])
    with pytest.warns(UserWarning, match="1 of 1 sentences"):
        tags = xlm_jax.load(outputs["ner"]).predict_tokens([long.split()])
    assert len(tags[0]) == 400 and tags[0][-1] == "O"


# ------------------------------------------------------------------------------------------- compilation

def test_buckets_compile_each_shape_once(outputs):
    m = xlm_jax.load(outputs["run"])
    compiles = []
    listener = lambda name, *_, **__: compiles.append(name) if name.endswith("backend_compile_duration") else None
    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        texts = ["the cat", "die katze öffnen", "le chat"]
        m.embed(texts)
        first = len(compiles)
        assert first >= 1 and m.compiled_shapes() == 1
        m.embed(texts)
        m.embed(["the dog house", "das haus", "le chien"])  # other texts, same bucket (3 rows -> 4, width 16)
        m.similarity(["a"] * 3, ["b", "c", "d", "e"])  # 3 -> 4 rows again
        assert len(compiles) == first and m.compiled_shapes() == 1
        m.embed(["the cat " * 10] * 20)  # 20 rows of 22 tokens: one new shape (32 x 32)
        assert m.compiled_shapes() == 2
        m.fill_mask(["the <mask>", "a <mask> b"])
        n = len(compiles)
        m.fill_mask(["die <mask>", "le <mask>"])
        assert len(compiles) == n
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    assert [bucket(n, 16, 128) for n in (1, 16, 17, 100, 128, 500)] == [16, 16, 32, 128, 128, 128]
    assert [bucket(n, 1, 32) for n in (1, 2, 3, 5, 32, 33)] == [1, 2, 4, 8, 32, 32]


# --------------------------------------------------------------------------------------------- predict

def test_predict_and_predict_tokens(outputs):
    cls = xlm_jax.load(outputs["cls"])
    p = cls.predict("the cat")
    assert isinstance(p, Prediction) and p.label in ("file", "other") and set(p.probabilities) == {"file", "other"}
    assert abs(sum(p.probabilities.values()) - 1) < 1e-5 and p.probability == max(p.probabilities.values())
    many = cls.predict(["the cat", "open the file", "die datei"])
    assert len(many) == 3 and many[0].label == p.label and abs(many[0].probability - p.probability) < 1e-5
    pair = xlm_jax.load(outputs["pair"])
    assert len(pair.predict([("the cat", "die katze"), ["le chat", "the cat"]])) == 2
    assert pair.predict(("the cat", "die katze")).label in ("0", "1")
    ner = xlm_jax.load(outputs["ner"])
    tags = ner.predict_tokens([["Angela", "Merkel", "visited", "Paris"], ["die", "katze"], []])
    assert [len(t) for t in tags] == [4, 2, 0] and all(t in ("O", "B-LOC", "I-LOC") for row in tags for t in row)
    # first sub-word rule: the label is the argmax at each word's first piece.
    words = ["Angela", "Merkel"]
    ids, starts = [0], []
    for w in words:
        starts.append(len(ids))
        ids += m_pieces(ner, w)
    ids.append(2)
    from xlm_jax.workflows.loading import task_model

    logits = task_model(ner.config, ner.task.spec, 3).apply({"params": ner.params}, jnp_array(ids))
    assert tags[0][:2] == [ner.task.labels[int(np.argmax(np.asarray(logits)[0, s]))] for s in starts]


def m_pieces(m, word):
    return m.tokenizer.encode_pieces_ids(word) or [m.tokenizer.unk_id]


def jnp_array(ids):
    return jax.numpy.asarray([ids])


def test_predict_bad_input(outputs, run_model):
    cls, ner, pair = (xlm_jax.load(outputs[k]) for k in ("cls", "ner", "pair"))
    _refused(lambda: run_model.predict(["the cat"]), "predict needs a fine-tuned checkpoint", "no", "lm_head",
             "xlm_jax.finetune")
    _refused(lambda: run_model.predict_tokens([["a"]]), "predict_tokens needs a fine-tuned checkpoint")
    _refused(lambda: cls.predict_tokens([["the", "cat"]]), "classification", "one label per text", "predict(texts)")
    _refused(lambda: ner.predict(["the cat"]), "'ner'", "one label per word", "predict_tokens")
    _refused(lambda: cls.predict([]), "texts is empty")
    _refused(lambda: cls.predict([("a", "b")]), "texts[0]", "single str")
    _refused(lambda: pair.predict(["a"]), "texts[0]", "(premise, hypothesis) pairs")
    _refused(lambda: pair.predict("a"), "texts=", "pairs")
    _refused(lambda: cls.predict([("a", 5)]), "texts[0]", "str")
    _refused(lambda: cls.predict(["a"], lang="en"), "lang='en'", "no language embeddings")
    _refused(lambda: ner.predict_tokens([]), "non-empty list of sentences")
    _refused(lambda: ner.predict_tokens("Angela Merkel"), "non-empty list of sentences")
    _refused(lambda: ner.predict_tokens(["Angela", "Merkel"]), "sentences[0]", "split it")
    _refused(lambda: ner.predict_tokens([["Angela", 3]]), "sentences[0]", "list of words")
    _refused(lambda: ner.predict_tokens([["a\udc80"]]), "surrogate")


# ------------------------------------------------------------------------------- parity with transformers

def test_parity_with_transformers(outputs, tmp_path):
    """embed, fill_mask and predict against the HF export (`convert --to hf`) run by transformers, with
    XLMRobertaTokenizer reading the sentencepiece.bpe.model that convert copies along."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from xlm_jax.workflows.convert import convert

    convert(outputs["run"], tmp_path / "hf", to="hf")
    hf = transformers.AutoModelForMaskedLM.from_pretrained(tmp_path / "hf").eval()
    hf_tok = transformers.XLMRobertaTokenizer.from_pretrained(tmp_path / "hf")
    m = xlm_jax.load(outputs["run"])
    texts = ["the cat", "die katze öffnen datei", "le chat chien maison fenêtre"]
    enc = hf_tok(texts, padding=True, return_tensors="pt")
    for i, text in enumerate(texts):
        assert enc["input_ids"][i][enc["attention_mask"][i] == 1].tolist() == m.tokenizer.encode(text)
    with torch.no_grad():
        out = hf(**enc, output_hidden_states=True)
    weights = enc["attention_mask"][..., None].float()
    for layer, hf_index in ((-1, -1), (1, 1), (-2, 1)):  # hidden_states[0] is the embeddings: layer k is [k]
        want = ((out.hidden_states[hf_index] * weights).sum(1) / weights.sum(1)).numpy()
        np.testing.assert_allclose(m.embed(texts, layer=layer, normalize=False), want, atol=1e-5, rtol=0)
    np.testing.assert_allclose(m.embed(texts, pooling="cls", normalize=False), out.hidden_states[-1][:, 0].numpy(),
                               atol=1e-5, rtol=0)

    masked = ["the <mask> house", "<mask> katze <mask>", "le chat <mask>"]
    enc = hf_tok(masked, padding=True, return_tensors="pt")
    with torch.no_grad():
        probs = torch.softmax(hf(**enc).logits, -1).numpy()
    candidates = np.asarray([i for i in range(len(m.tokenizer)) if i not in (0, 1, 2, 3, hf_tok.mask_token_id)])
    ours = m.fill_mask(masked, top_k=5)
    for i, row in enumerate(ours):
        positions = np.flatnonzero(enc["input_ids"][i].numpy() == hf_tok.mask_token_id)
        assert len(positions) == len(row)
        for pos, fills in zip(positions, row):
            p = probs[i, pos, candidates]
            top = candidates[np.argsort(-p, kind="stable")[:5]]
            assert [f.id for f in fills] == top.tolist()
            assert [f.piece for f in fills] == hf_tok.convert_ids_to_tokens(top.tolist())
            np.testing.assert_allclose([f.probability for f in fills], np.sort(p)[::-1][:5], atol=1e-6, rtol=1e-4)

    # predict: convert exports the encoder of a fine-tuned checkpoint only (XLMRobertaModel: the classifier head
    # has no place in the architectures convert writes), so transformers' own XLMRobertaForSequenceClassification
    # is given that encoder and our head's weights (a Linear kernel is [in, out], torch's weight [out, in]).
    cls = xlm_jax.load(outputs["cls"])
    convert(outputs["cls"] / "best", tmp_path / "hf_cls", to="hf")  # convert reads the best/ directory, not OUT
    hf_cls = transformers.XLMRobertaForSequenceClassification.from_pretrained(tmp_path / "hf_cls", num_labels=2).eval()
    head = cls.params["classifier"]
    with torch.no_grad():
        for name in ("dense", "out_proj"):
            getattr(hf_cls.classifier, name).weight.copy_(torch.from_numpy(np.asarray(head[name]["kernel"]).T.copy()))
            getattr(hf_cls.classifier, name).bias.copy_(torch.from_numpy(np.array(head[name]["bias"])))
        enc = hf_tok(texts, padding=True, return_tensors="pt")
        want = torch.softmax(hf_cls(**enc).logits, -1).numpy()
    got = cls.predict(texts)
    np.testing.assert_allclose([[p.probabilities[l] for l in cls.task.labels] for p in got], want, atol=1e-5, rtol=0)
    assert [p.label for p in got] == [cls.task.labels[i] for i in want.argmax(1)]
