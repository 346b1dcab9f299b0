"""`LoadedModel.answer`: extractive QA from the notebook API on a tiny `task: qa` fine-tuning output (trained a
few steps through `finetune.main`, in-process): parity with `evaluate task`'s predictions.json, the n-best list,
the input forms, no recompilation on a repeat call, and the bad inputs (UserError naming the value)."""

from __future__ import annotations

import json
import warnings

import flax.linen as nn
import jax
import numpy as np
import pytest

import tiny_setup  # tests/tiny_setup.py
from test_api import _refused  # UserError whose message holds every word
from test_qa import _args, squad_file  # the QA tests' learnable SQuAD files and finetune arguments

import xlm_jax
from xlm_jax.tasks import qa
from xlm_jax.api import Answer, LoadedModel


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("api_qa")
    tok = tiny_setup.make_tokenizer(d)
    ckpt = tiny_setup.make_checkpoint(d)
    squad_file(d / "train.json", "en", 24, 1, long_every=6)
    squad_file(d / "valid.json", "en", 12, 2, long_every=3)  # every 3rd context needs several windows
    return {"dir": d, "tok": str(tok), "ckpt": str(ckpt)}


@pytest.fixture(scope="module")
def run(tiny, tmp_path_factory):
    """A tiny xlmr QA model fine-tuned 6 steps (max_len 48, doc_stride 16, max_query_len 12), and what
    `python -m xlm_jax.evaluate task` predicts with it on valid.json (OUT/predictions.json)."""
    from xlm_jax import evaluate, finetune

    d = tiny["dir"]
    out = tmp_path_factory.mktemp("api_qa_run") / "run"
    finetune.main(_args(tiny, out, test=[f"en:{d / 'valid.json'}"], max_steps=6, eval_every=6, log_every=3))
    evaluate.main(["task", "--checkpoint", str(out), "--tokenizer", tiny["tok"], "--data", f"en:{d / 'valid.json'}",
                   "--out", str(d / "eval")])
    predictions = json.loads((d / "eval" / "predictions.json").read_text())["test"]["en"]
    paragraphs = json.loads((d / "valid.json").read_text())["data"][0]["paragraphs"]
    questions = [(p["qas"][0]["id"], p["qas"][0]["question"], p["context"]) for p in paragraphs]
    return {"out": out, "predictions": predictions, "questions": questions}


@pytest.fixture(scope="module")
def m(run):
    return xlm_jax.load(run["out"])


def test_answer_equals_evaluate_task_predictions(m, run):
    assert m.task.task == "qa" and m.task.options["doc_stride"] == 16
    qids, questions, contexts = zip(*run["questions"])
    answers = m.answer(list(questions), list(contexts))
    assert len(answers) == len(qids)
    for qid, context, a in zip(qids, contexts, answers):
        assert isinstance(a, Answer)
        assert a.text == run["predictions"][qid], (qid, a, run["predictions"][qid])
        assert a.text and context[a.start:a.end] == a.text  # a substring at its character span
        assert np.isfinite(a.score) and a.n_best == [qa.Span(a.text, a.start, a.end, a.score)]
    # The long contexts were answered over several windows (doc_stride 16 in max_len 48).
    feats = qa.make_features([qa.QAExample("q", q, c, (), "en") for q, c in zip(questions, contexts)], m.tokenizer,
                             qa.InputProtocol.from_config(m.config), m.task.max_len, 16, 12)
    assert len(feats) > len(questions)


def test_answer_forms_and_n_best(m, run):
    _, questions, contexts = zip(*run["questions"][:3])
    one = m.answer(questions[0], contexts[0], n_best=5)
    assert isinstance(one, Answer) and one.n_best[0] == (one.text, one.start, one.end, one.score)
    assert 1 < len(one.n_best) <= 5
    scores = [s.score for s in one.n_best]
    assert scores == sorted(scores, reverse=True) and len({(s.start, s.end) for s in one.n_best}) == len(scores)
    for s in one.n_best:
        assert s.text == contexts[0][s.start:s.end] and s.text == s.text.strip() and s.text
    # Pairs, one context per question, and one context shared by all give the same answers.
    pairs = m.answer([(questions[0], contexts[0]), (questions[1], contexts[1])])
    lists = m.answer(list(questions[:2]), list(contexts[:2]))
    assert [a.text for a in pairs] == [a.text for a in lists] and pairs[0].text == one.text
    assert m.answer((questions[0], contexts[0])).text == one.text  # one pair: one Answer
    shared = m.answer([questions[0], questions[1]], contexts[0])
    assert shared[0].text == one.text and shared[1].text in contexts[0]
    # max_answer_length=1: every candidate is one piece.
    short = m.answer(questions[0], contexts[0], n_best=20, max_answer_length=1)
    pieces = [len(m.tokenizer.encode_pieces_ids(" " + s.text)) for s in short.n_best]
    assert max(pieces) == 1 or all(len(s.text.split()) == 1 for s in short.n_best)


def test_answer_compiles_each_shape_once(run):
    m = xlm_jax.load(run["out"])  # a fresh model: its first call compiles
    _, questions, contexts = zip(*run["questions"])
    compiles = []
    listener = lambda name, *_, **__: compiles.append(name) if name.endswith("backend_compile_duration") else None
    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        first = m.answer(list(questions), list(contexts))
        n, shapes = len(compiles), m.compiled_shapes()
        assert n >= 1 and shapes >= 1
        again = m.answer(list(questions), list(contexts))
        m.answer(list(questions[:1]) * len(questions), list(contexts))  # other questions, the same buckets
        assert len(compiles) == n and m.compiled_shapes() == shapes
        assert [a.text for a in first] == [a.text for a in again]
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


def test_odd_but_valid_inputs_are_answered(m, run):
    _, questions, contexts = zip(*run["questions"][:1])
    q, c = questions[0], contexts[0]
    long_context = " ".join([c] * 40)  # many windows, nothing cut, no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        a = m.answer(q, long_context, n_best=np.int64(3), max_answer_length=10**6)
    assert a.text and long_context[a.start:a.end] == a.text and len(a.n_best) == 3
    for odd in ("😀 ☃ ✓", "<s> </s> <mask>", "x", "  padded  context  "):  # unknown pieces, special-token text
        b = m.answer(q, odd, n_best=100)
        assert odd[b.start:b.end] == b.text and np.isfinite(b.score) and 1 <= len(b.n_best) <= 100
        assert all(np.isfinite(s.score) and odd[s.start:s.end] == s.text for s in b.n_best)


def test_long_question_is_cut_with_a_warning_as_evaluate_cuts_it(m, run):
    _, questions, contexts = zip(*run["questions"][:2])
    long_q = " ".join(["open the file"] * 20) + " " + questions[0]
    with pytest.warns(UserWarning, match=r"1 of 2 questions .*max_query_len=12"):
        out = m.answer([long_q, questions[1]], list(contexts))
    assert out[0].text and out[0].text in contexts[0] and np.isfinite(out[0].score)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m.answer(questions[1], contexts[1])  # no warning for a question that fits


def test_answer_bad_input(m, run, tiny):
    _, questions, contexts = zip(*run["questions"][:2])
    q, c = questions[0], contexts[0]
    _refused(lambda: m.answer("", c), "question=''", "empty")
    _refused(lambda: m.answer("   ", c), "question='   '", "empty")
    _refused(lambda: m.answer(q, ""), "context=''", "empty")
    _refused(lambda: m.answer([q, q], [c, " \n"]), "context[1]", "empty")
    _refused(lambda: m.answer([("", c)]), "question[0]", "empty")
    _refused(lambda: m.answer(5, c), "question must be a str", "int")
    _refused(lambda: m.answer(q, 5), "context must be a str", "int")
    _refused(lambda: m.answer(q, {"context": c}), "context must be", "dict")
    _refused(lambda: m.answer([q, 3], c), "question[1]", "must be a str", "int")
    _refused(lambda: m.answer([q, q], [c, None]), "context[1]", "must be a str")
    _refused(lambda: m.answer(b"what", c), "question must be", "bytes")
    _refused(lambda: m.answer(None, c), "question must be", "NoneType")
    _refused(lambda: m.answer(q), "without a context")
    _refused(lambda: m.answer([q]), "question[0]", "(question, context) pair")
    _refused(lambda: m.answer([(q, c, c)]), "question[0]", "(question, context) pair")
    _refused(lambda: m.answer([], c), "question=[] is empty")
    _refused(lambda: m.answer([q], []), "context=[] is empty")
    _refused(lambda: m.answer([q, q], [c]), "2 questions but 1 contexts")
    _refused(lambda: m.answer(q, "a\ud800b"), "context", "surrogate")
    for bad in (0, -1, 2.5, True, "3", None):
        _refused(lambda: m.answer(q, c, n_best=bad), f"n_best={bad!r}", "integer >= 1")
    for bad in (0, -2, 1.5, False, "5"):
        _refused(lambda: m.answer(q, c, max_answer_length=bad), f"max_answer_length={bad!r}", "integer >= 1", "30")
    _refused(lambda: m.answer(q, c, lang="en"), "lang='en'", "no language embeddings")
    # The wrong head, or none: say which method fits.
    _refused(lambda: m.predict([q]), "predict does not fit", "'qa'", "answer(question, context)")
    _refused(lambda: m.predict_tokens([[q]]), "predict_tokens does not fit", "answer(question, context)")
    _refused(lambda: m.fill_mask("a <mask>"), "no masked-LM head", "answer(question, context)")
    pretrained = xlm_jax.load(tiny["ckpt"], tokenizer=tiny["tok"])
    _refused(lambda: pretrained.answer(q, c), "answer needs a fine-tuned checkpoint", "task=qa")
    from xlm_jax.workflows.loading import TaskInfo

    cls = LoadedModel(m.config, m.params, m.tokenizer, TaskInfo("xnli", ("entailment", "neutral", "contradiction"), 48))
    _refused(lambda: cls.answer(q, c), "answer does not fit", "'xnli'", "use predict(texts)")
    ner = LoadedModel(m.config, m.params, m.tokenizer, TaskInfo("ner", ("O", "B-PER"), 48))
    _refused(lambda: ner.answer(q, c), "answer does not fit", "use predict_tokens")


def _qa_checkpoint(d, tok, name: str, max_query_len: int = 12):
    """A QA fine-tuning output as `finetune` writes it, with a random span head (no training)."""
    from xlm_jax.models.config import get_model_config
    from xlm_jax.workflows.loading import TaskInfo, task_model
    from xlm_jax.workflows.finetune import FINETUNE_CONFIG, FinetuneConfig, save_best
    from xlm_jax.models.xlm import init_params
    import dataclasses

    cfg = get_model_config(name)
    if name == "xlm_tiny":  # the tiny tokenizer's ids are fairseq's layout (<mask> last)
        from xlm_jax.data.tokenizer import Tokenizer

        cfg = cfg.replace(bos_token_id=0, pad_token_id=1, eos_token_id=2, unk_token_id=3,
                          mask_token_id=Tokenizer.load(tok).mask_id)
    info = TaskInfo("qa", ("start", "end"), 48, {"doc_stride": 16, "max_query_len": max_query_len, "n_best": 20,
                                                 "max_answer_length": 30})
    params = nn.unbox(jax.jit(lambda key: init_params(task_model(cfg, info.spec, 2), key))(jax.random.key(3)))
    out = d / f"qa_{name}_{max_query_len}"
    out.mkdir()
    save_best(out, jax.tree_util.tree_map(np.asarray, params), cfg, info, 1)
    (out / FINETUNE_CONFIG).write_text(json.dumps({**dataclasses.asdict(FinetuneConfig()), "task": "qa",
                                                   "tokenizer": str(tok), "out": str(out)}))
    return out


def test_xlm_qa_needs_lang_and_refuses_an_unfittable_question(tiny, run):
    _, questions, contexts = zip(*run["questions"][:2])
    xm = xlm_jax.load(_qa_checkpoint(tiny["dir"], tiny["tok"], "xlm_tiny"))
    a = xm.answer(list(questions), list(contexts), lang="en")
    assert all(x.text in c and np.isfinite(x.score) for x, c in zip(a, contexts))
    assert xm.answer(questions[0], contexts[0], lang="de").text in contexts[0]
    _refused(lambda: xm.answer(questions[0], contexts[0]), "lang=", "de, en, fr")
    _refused(lambda: xm.answer(questions[0], contexts[0], lang="es"), "lang='es'", "de, en, fr")
    _refused(lambda: xm.answer(list(questions), list(contexts), lang=["en"]), "list of 2")
    # max_query_len=0 keeps whole questions: one that leaves no room for the context is refused, naming max_len.
    whole = xlm_jax.load(_qa_checkpoint(tiny["dir"], tiny["tok"], "xlmr_tiny", max_query_len=0))
    long_q = " ".join(["open the file"] * 30)
    _refused(lambda: whole.answer(long_q, contexts[0]), "question:", "pieces", "max_len >= ", "max_len=48",
             "max_query_len")
    _refused(lambda: whole.answer([questions[0], long_q], contexts[0]), "question[1]:", "max_len=48")
    assert whole.answer(questions[0], contexts[0]).text in contexts[0]
