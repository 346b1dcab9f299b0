"""Extractive QA: the official SQuAD v1.1 / MLQA metrics on hand-made cases, the SQuAD-format reader and its bad
inputs, windows and offset mapping, span decoding, and a tiny model fine-tuned a few steps end to end (in-process
through `finetune.main` and `evaluate.main`)."""

import hashlib
import json
import random
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tiny_setup  # tests/tiny_setup.py: tiny tokenizer + checkpoint

from xlm_jax.tasks import qa
from xlm_jax.tasks import qa_metrics as M
from xlm_jax import tasks as T
from xlm_jax.core.errors import UserError


# ------------------------------------------------------------------------------------------------ metrics


S, ML = M.SQUAD, M.MLQA


@pytest.mark.parametrize("text, lang, metric, want", [
    # SQuAD v1.1 in every language: ASCII punctuation only, English articles, whitespace.
    ("The  Cat, sat!", "fr", S, "cat sat"),
    ("«Le chat»", "fr", S, "«le chat»"),  # guillemets are not in string.punctuation: SQuAD keeps them
    ("an apple a day", "ru", S, "apple day"),
    ("“Denver Broncos”", "en", S, "“denver broncos”"),  # curly quotes are not ASCII punctuation
    ("der Rhein", "de", S, "der rhein"),  # no German articles in SQuAD's script, even on German text
    ("北京大学，2019年", "zh", S, "北京大学，2019年"),  # no segmentation: one whitespace token
    # MLQA: Unicode punctuation (category P*) too, per-language articles of the context language.
    ("«The cat»", "en", ML, "cat"),
    ("“Denver Broncos”", "en", ML, "denver broncos"),
    ("Die Katze und das Haus.", "de", ML, "katze und haus"),
    ("Los perros de la casa", "es", ML, "perros de casa"),
    ("cái bàn của tôi", "vi", ML, "bàn tôi"),
    ("الكتاب", "ar", ML, "كتاب"),  # every "ال" goes, as in MLQA's released pattern
    ("भारत।", "hi", ML, "भारत"),  # the danda is punctuation (Po); Hindi has no articles to remove
    ("the दिल्ली", "hi", ML, "the दिल्ली"),
    # zh: punctuation removed, then each CJK character is a token, other runs split on whitespace.
    ("北京大学，2019年", "zh", ML, "北 京 大 学 2019 年"),
    ("The Beatles乐队", "zh", ML, "the beatles 乐 队"),  # no article removal for zh
])
def test_normalize_answer_follows_the_official_scripts(text, lang, metric, want):
    assert M.normalize_answer(text, lang, metric) == want


def _official_squad_v11(prediction, gold):
    """rajpurkar/SQuAD-explorer evaluate-v1.1.py's normalize_answer / exact_match_score / f1_score, as released:
    an independent oracle for the cases below."""
    import collections
    import re
    import string

    def normalize(s):
        s = "".join(ch for ch in s.lower() if ch not in set(string.punctuation))
        return " ".join(re.sub(r"\b(a|an|the)\b", " ", s).split())

    p, g = normalize(prediction).split(), normalize(gold).split()
    same = sum((collections.Counter(p) & collections.Counter(g)).values())
    f1 = 0.0 if same == 0 else 2 * (same / len(p)) * (same / len(g)) / (same / len(p) + same / len(g))
    return float(normalize(prediction) == normalize(gold)), f1


@pytest.mark.parametrize("prediction, gold, lang", [
    ("“Denver Broncos”", "Denver Broncos", "en"),  # official 0 / 0; MLQA's rules would give 1 / 1
    ("der Rhein", "Rhein", "de"),  # official 0 / 0.667; MLQA's German articles would give 1 / 1
    ("el río Rin", "río Rin", "es"),
    ("北京大学", "北京", "zh"),  # official: one token each, F1 0; MLQA's segmentation would give 2/3
    ("The Rhine.", "the rhine", "en"),  # the same under both
    ("¿Quién?", "Quién", "es"),
])
def test_squad_metric_equals_the_official_v11_script_where_mlqa_differs(prediction, gold, lang):
    assert (M.exact_match(prediction, gold, lang, S), M.f1(prediction, gold, lang, S)) == pytest.approx(
        _official_squad_v11(prediction, gold))


def test_the_two_scripts_separate_on_the_issue_cases():
    assert (M.exact_match("“Denver Broncos”", "Denver Broncos", "en", S), M.f1("“Denver Broncos”", "Denver Broncos", "en", S)) == (0.0, 0.0)
    assert (M.exact_match("“Denver Broncos”", "Denver Broncos", "en", ML), M.f1("“Denver Broncos”", "Denver Broncos", "en", ML)) == (1.0, 1.0)
    assert M.exact_match("der Rhein", "Rhein", "de", S) == 0.0
    assert M.f1("der Rhein", "Rhein", "de", S) == pytest.approx(2 / 3)
    assert (M.exact_match("der Rhein", "Rhein", "de", ML), M.f1("der Rhein", "Rhein", "de", ML)) == (1.0, 1.0)


@pytest.mark.parametrize("name, metric", [
    ("test-context-de-question-en.json", ML), ("dev-context-zh-question-zh.json", ML),
    ("xquad.de.json", S), ("train-v1.1.json", S), ("dev-v1.1.json", S), ("tydiqa-goldp-v1.1-dev-arabic.json", S),
    ("my_questions.json", S), ("context-de-question-en.json", S),
])
def test_the_metric_is_chosen_by_dataset_file(name, metric):
    assert M.metric_for_file(f"/data/{name}") == metric
    assert M.metric_for_file(f"/data/{name}", configured=ML) == ML  # a configured metric wins


def test_unknown_metric_names_are_refused():
    with pytest.raises(ValueError, match="squad_v1.1, mlqa"):
        M.metric_for_file("x.json", "bleu")
    with pytest.raises(ValueError, match="squad_v1.1, mlqa"):
        M.normalize_answer("x", "en", "squad")


def test_f1_and_em_as_the_official_scripts_compute_them():
    # SQuAD: prediction tokens [cat, sat], gold [cat]: P = 1/2, R = 1 -> F1 = 2/3; EM 0.
    assert M.f1("the cat sat", "a cat", "ru", S) == pytest.approx(2 / 3)
    assert M.exact_match("The cat.", "the  cat", "ru", S) == 1.0
    assert M.f1("dog", "cat", "ru", S) == 0.0
    # Repeated tokens count with their multiplicity (Counter intersection): [a, a, b] vs [a, b]: P = 2/3, R = 1.
    assert M.f1("x x y", "x y", "fr", S) == pytest.approx(0.8)
    # zh mixed segmentation gives partial credit inside a run without spaces: 北京 vs 北京大学: P = 1, R = 1/2.
    assert M.f1("北京", "北京大学", "zh", ML) == pytest.approx(2 / 3)
    assert M.f1("北京", "北京大学", "zh", S) == 0.0  # whitespace tokens: one token each, different
    # de articles are dropped by MLQA, not by SQuAD's normalisation.
    assert M.exact_match("die Katze", "Katze", "de", ML) == 1.0
    assert M.exact_match("die Katze", "Katze", "de", S) == 0.0
    # Max over gold answers, each metric on its own.
    assert M.best_over_golds("the red cat", ["red cat", "a cat"], "en", S) == (1.0, 1.0)
    assert M.best_over_golds("cat", ["red cat", "dog"], "en", S) == (0.0, pytest.approx(2 / 3))
    # An empty prediction scores 0 (no token in common), as in both scripts.
    assert M.f1("", "cat", "en", S) == 0.0 and M.exact_match("", "cat", "en", S) == 0.0


def test_score_predictions_averages_per_language_and_names_the_metric():
    out = M.score_predictions([("cat", ["cat"], "en", S), ("dog", ["cat"], "en", S),
                               ("Katze", ["die Katze"], "de", ML)])
    assert out["en"] == {"exact_match": 0.5, "f1": 0.5, "score": 0.5, "n": 2, "metric": S}
    assert out["de"]["exact_match"] == 1.0 and out["de"]["n"] == 1 and out["de"]["metric"] == ML


def test_mlqa_normalize_refuses_languages_outside_mlqa():
    with pytest.raises(ValueError, match="ru"):
        M.mlqa_normalize("x", "ru")


# ------------------------------------------------------------------------------------------------- files


def squad_json(paragraphs) -> dict:
    return {"version": "1.1", "data": [{"title": "t", "paragraphs": paragraphs}]}


def answer_at(context: str, text: str, qid: str = "q1", question: str = "where?") -> dict:
    return {"id": qid, "question": question, "answers": [{"text": text, "answer_start": context.index(text)}]}


def write(path: Path, data) -> Path:
    path.write_text(data if isinstance(data, str) else json.dumps(data, ensure_ascii=False))
    return path


def test_read_squad_reads_questions_and_languages(tmp_path):
    ctx = "Die Katze schläft im Haus."
    data = squad_json([{"context": ctx, "qas": [answer_at(ctx, "Haus", "a"), answer_at(ctx, "Katze", "b")]}])
    # MLQA's and XQuAD's file names carry the context language; LANG: wins over the name; else English.
    mlqa = write(tmp_path / "test-context-de-question-en.json", data)
    xquad = write(tmp_path / "xquad.de.json", data)
    plain = write(tmp_path / "train-v1.1.json", data)
    assert [e.lang for e in qa.read_files([str(mlqa), str(xquad)])] == ["de"] * 4
    assert qa.read_files([f"es:{mlqa}"])[0].lang == "es"
    examples = qa.read_files([str(plain)])
    assert [(e.qid, e.lang, e.answers) for e in examples] == [("a", "en", (("Haus", 21),)), ("b", "en", (("Katze", 4),))]
    assert T.read_file(T.get_task("qa"), str(plain)) == examples  # tasks' reader hands QA files to xlm_jax.tasks.qa


def _bad_files(tmp_path):
    ctx = "The cat sat on the mat."
    good_q = answer_at(ctx, "mat")
    return {
        "answer not at offset": (squad_json([{"context": ctx, "qas": [
            {"id": "q7", "question": "who?", "answers": [{"text": "cat", "answer_start": 5}]}]}]),
            ["question 'q7'", "'cat'", "answer_start=5", "offset 4"]),
        "offset past the end": (squad_json([{"context": ctx, "qas": [
            {"id": "q8", "question": "who?", "answers": [{"text": "cat", "answer_start": 400}]}]}]),
            ["question 'q8'", "answer_start=400", "23 characters"]),
        "negative offset": (squad_json([{"context": ctx, "qas": [
            {"id": "q9", "question": "who?", "answers": [{"text": "cat", "answer_start": -1}]}]}]),
            ["question 'q9'", "answer_start=-1"]),
        "text not in context": (squad_json([{"context": ctx, "qas": [
            {"id": "q10", "question": "who?", "answers": [{"text": "dog", "answer_start": 4}]}]}]),
            ["'dog'", "not in the context"]),
        "question only": (squad_json([{"context": "  ", "qas": [good_q]}]), ["question 'q1'", "context is empty",
                                                                            "question-only"]),
        "no context field": (squad_json([{"qas": [good_q]}]), ["paragraphs[0]", "missing field 'context'"]),
        "no answers": (squad_json([{"context": ctx, "qas": [{"id": "q2", "question": "?", "answers": []}]}]),
                       ["question 'q2'", "no answers", "SQuAD 2.0"]),
        "unanswerable v2": (squad_json([{"context": ctx, "qas": [{**good_q, "is_impossible": True}]}]),
                            ["no answers"]),
        "empty question": (squad_json([{"context": ctx, "qas": [{**good_q, "question": " "}]}]),
                           ["question 'q1'", "question is empty"]),
        "empty answer": (squad_json([{"context": ctx, "qas": [
            {"id": "q3", "question": "?", "answers": [{"text": "", "answer_start": 0}]}]}]), ["empty text"]),
        "offset as string": (squad_json([{"context": ctx, "qas": [
            {"id": "q4", "question": "?", "answers": [{"text": "cat", "answer_start": "4"}]}]}]),
            ["'answer_start'", "an integer"]),
        "malformed JSON": ('{"data": [ {"paragraphs": [}', [":1:", "not valid JSON"]),
        "not SQuAD layout": ([1, 2], ["expected a JSON object"]),
        "no data key": ({"version": "1.1"}, ["missing field 'data'"]),
        "no questions": (squad_json([]), ["no questions"]),
    }


def test_read_squad_refuses_each_bad_kind_naming_file_and_question(tmp_path):
    for name, (data, words) in _bad_files(tmp_path).items():
        path = write(tmp_path / f"{name.replace(' ', '_')}.json", data)
        with pytest.raises(UserError) as err:
            qa.read_squad(path)
        message = str(err.value)
        assert str(path) in message, (name, message)
        for word in words:
            assert word in message, (name, word, message)


# ---------------------------------------------------------------------------------------- features, decode


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("qa")
    tok = tiny_setup.make_tokenizer(d)
    ckpt = tiny_setup.make_checkpoint(d)
    return {"dir": d, "tok": str(tok), "ckpt": str(ckpt)}


def _tokenizer(tiny, **kw):
    from xlm_jax.data.tokenizer import Tokenizer

    return Tokenizer.load(tiny["tok"], **kw)


def _protocol(name="xlmr_tiny"):
    from xlm_jax.models.config import get_model_config

    return T.InputProtocol.from_config(get_model_config(name))


def test_offsets_map_pieces_back_to_the_original_text(tiny):
    tok = _tokenizer(tiny)
    texts = ["Die Katze  öffnen Datei 北京.", "file"]
    for text, (ids, spans) in zip(texts, qa.encode_with_offsets(tok, texts)):
        assert ids.tolist() == tok.encode_pieces_ids(text, special_tokens=False)  # the same ids as the encoder
        covered = "".join(text[b:e] for b, e in spans)
        assert covered.replace(" ", "") == text.replace(" ", "")  # every non-space character, in order, once
    # XLM's lowercase + accent stripping: the offsets still index the original (cased, accented) text.
    lower = _tokenizer(tiny, lowercase_and_strip_accents=True)
    text = "ÖFFNEN Fenster"
    ids, spans = qa.encode_with_offsets(lower, [text])[0]
    assert ids.tolist() == lower.encode_pieces_ids(text, special_tokens=False)
    assert "".join(text[b:e] for b, e in spans).replace(" ", "") == "ÖFFNENFenster"


def _long_example(lang="en", n_words=60, seed=0):
    rng = random.Random(seed)
    words = tiny_setup.WORDS[lang]
    ctx_words = [rng.choice(words[:5]) for _ in range(n_words)]
    pos = n_words // 2
    ctx_words[pos] = words[5]
    context = " ".join(ctx_words)
    start = len(" ".join(ctx_words[:pos])) + 1
    return qa.QAExample("q", f"{words[8]} {words[5]}?", context, ((words[5], start),), lang, "f: question 'q'")


@pytest.mark.parametrize("model", ["xlmr_tiny", "xlm_tiny"])
def test_windows_cover_a_long_context_and_targets_point_at_the_answer(tiny, model):
    tok, protocol = _tokenizer(tiny), _protocol(model)
    ex = _long_example()
    feats = qa.make_features([ex], tok, protocol, max_len=32, doc_stride=8, max_query_len=16, train=True)
    ctx_ids, ctx_spans = qa.encode_with_offsets(tok, [ex.context])[0]
    assert len(feats) > 2 and all(len(row) <= 32 for row in feats.ids)
    # The windows, put back together, cover every context piece; consecutive starts are doc_stride apart.
    seen = set()
    for f in range(len(feats)):
        n = len(feats.spans[f])
        window = feats.ids[f][feats.context_start[f]: feats.context_start[f] + n]
        first = next(i for i in range(len(ctx_ids)) if (ctx_spans[i] == feats.spans[f][0]).all())
        assert window == ctx_ids[first: first + n].tolist()
        seen.update(range(first, first + n))
        if feats.start[f]:  # the window holds the answer: the target span decodes to the answer text
            s, e = feats.start[f] - feats.context_start[f], feats.end[f] - feats.context_start[f]
            assert ex.context[feats.spans[f][s][0]: feats.spans[f][e][1]].strip() == ex.answers[0][0]
        else:
            assert feats.end[f] == 0
    assert seen == set(range(len(ctx_ids)))
    assert 0 < feats.answers_outside < len(feats)
    assert sum(1 for s in feats.start if s) >= 1
    if model == "xlm_tiny":  # XLM: every token carries the language id of the example
        assert set(feats.lang_ids) == {protocol.langs.index("en")}


def test_question_too_long_and_lengths_are_refused_naming_max_len(tiny):
    tok, protocol = _tokenizer(tiny), _protocol()
    ex = _long_example()
    long_q = qa.QAExample("q9", " ".join(["file"] * 40), ex.context, ex.answers, "en", "f.json: question 'q9'")
    with pytest.raises(UserError, match=r"f.json: question 'q9'.*max_len >= \d+ \(max_len=32\)"):
        qa.make_features([long_q], tok, protocol, max_len=32, max_query_len=0)
    feats = qa.make_features([long_q], tok, protocol, max_len=32, max_query_len=8)  # cut instead: counted
    assert feats.questions_cut == 1
    for kwargs, words in (({"max_len": 32, "max_query_len": 28}, ["max_query_len=28", "max_len=32"]),
                          ({"max_len": 5, "max_query_len": 0}, ["max_len=5", ">= 6"]),
                          ({"max_len": 32, "max_query_len": 8, "doc_stride": 0}, ["doc_stride=0"])):
        with pytest.raises(UserError) as err:
            qa.make_features([ex], tok, protocol, **kwargs)
        assert all(w in str(err.value) for w in words), (kwargs, str(err.value))


def test_decode_picks_the_best_valid_span_over_windows():
    context = "alpha beta gamma delta"
    spans = np.array([[0, 5], [5, 10], [10, 16], [16, 22]], np.int32)  # pieces with their leading space
    ex = qa.QAExample("q", "?", context, (("beta", 6),), "en")
    feats = qa.QAFeatures(ids=[[0] * 8, [0] * 7], example=[0, 0], context_start=[3, 3],
                          spans=[spans[:3], spans[2:]], start=[0, 0], end=[0, 0])
    a = np.full((8, 2), -5.0)
    b = np.full((7, 2), -5.0)
    a[0] = [50, 50]  # the first token (question side) is never a candidate
    a[3 + 1] = [3, -5]  # start "beta" ...
    a[3 + 2] = [-5, 2]  # ... end "gamma" in window 0: 5
    b[3 + 1] = [4, 3.5]  # "delta" alone in window 1: 7.5 wins
    b[3 + 0] = [-5, 9]  # an end before every start: never a span on its own start (-5 + 9 = 4 < 7.5)
    assert qa.decode_answers([ex], feats, [a, b]) == ["delta"]
    # max_answer_length and end >= start: with delta's logits gone, "beta gamma" (2 pieces) needs length >= 2.
    b[3 + 1] = [-5, -5]
    assert qa.decode_answers([ex], feats, [a, b], max_answer_length=2) == ["beta gamma"]
    assert qa.decode_answers([ex], feats, [a, b], max_answer_length=1) in (["beta"], ["gamma"], ["alpha"], ["delta"])
    # Window 0 alone with n_best=1: its best start (beta) and best end (gamma) make a 2-piece span; none fits 1.
    one = qa.QAFeatures(ids=feats.ids[:1], example=[0], context_start=[3], spans=feats.spans[:1], start=[0], end=[0])
    assert qa.decode_answers([ex], one, [a], n_best=1, max_answer_length=2) == ["beta gamma"]
    assert qa.decode_answers([ex], one, [a], n_best=1, max_answer_length=1) == [""]


def test_span_loss_is_the_mean_of_start_and_end_cross_entropy():
    logits = jnp.asarray(np.random.default_rng(0).normal(size=(2, 5, 2)), jnp.float32)
    mask = jnp.asarray([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]], jnp.int32)
    batch = {"attention_mask": mask, "start_positions": jnp.asarray([1, 4]), "end_positions": jnp.asarray([2, 4]),
             "weights": jnp.asarray([1.0, 0.0])}  # row 2 is padding (weight 0)
    loss, metrics = qa.span_loss(logits, batch)
    row = np.asarray(logits[0, :4])  # the padded position is not in the softmax
    ce = lambda x, t: float(jax.nn.logsumexp(x) - x[t])
    assert float(loss) == pytest.approx(0.5 * (ce(row[:, 0], 1) + ce(row[:, 1], 2)), rel=1e-5)
    assert float(metrics["count"]) == 1.0


# ------------------------------------------------------------------------------------------- end to end


def squad_file(path: Path, lang: str, n: int, seed: int, long_every: int = 0) -> Path:
    """A learnable hand-made SQuAD file: contexts of words of `lang`, the answer is the word for "file"."""
    rng = random.Random(seed)
    words = tiny_setup.WORDS[lang]
    paragraphs = []
    for i in range(n):
        ctx = [rng.choice(words[:5]) for _ in range(rng.randint(3, 12) if not (long_every and i % long_every == 0)
                                                  else 40)]
        pos = rng.randrange(len(ctx) + 1)
        ctx.insert(pos, words[5])
        context = " ".join(ctx) + "."
        start = len(" ".join(ctx[:pos])) + (1 if pos else 0)
        paragraphs.append({"context": context, "qas": [{"id": f"{lang}{i}", "question": f"{words[8]} {words[5]}?",
                                                        "answers": [{"text": words[5], "answer_start": start}]}]})
    return write(path, squad_json(paragraphs))


def _args(tiny, out, **kw):
    d = tiny["dir"]
    base = dict(task="qa", init=tiny["ckpt"], tokenizer=tiny["tok"], out=str(out), train=[f"en:{d / 'train.json'}"],
                valid=[f"en:{d / 'valid.json'}"], test=[f"en:{d / 'valid.json'}", f"de:{d / 'de.json'}",
                                                        f"fr:{d / 'fr.json'}"],
                lr=2e-3, batch_size=16, eval_batch_size=32, dropout=0, log_every=5, max_len=48, max_query_len=12,
                doc_stride=16, max_steps=30, eval_every=15)
    base.update(kw)
    return [f"{k}={json.dumps(v) if isinstance(v, list) else v}" for k, v in base.items()]


@pytest.fixture(scope="module")
def data(tiny):
    d = tiny["dir"]
    squad_file(d / "train.json", "en", 48, 1, long_every=6)  # every 6th context needs several windows
    squad_file(d / "valid.json", "en", 24, 2, long_every=4)
    squad_file(d / "de.json", "de", 12, 3)
    squad_file(d / "fr.json", "fr", 12, 4)
    return d


@pytest.fixture(scope="module")
def run(tiny, data, tmp_path_factory):
    """A tiny xlmr model fine-tuned 30 steps on 48 English questions (through the CLI's main, in-process)."""
    from xlm_jax import finetune

    out = tmp_path_factory.mktemp("qa_run") / "run"
    finetune.main(_args(tiny, out))
    return out


def test_tiny_qa_finetune_learns_decodes_substrings_and_evaluates(tiny, data, run, tmp_path, capsys):
    from xlm_jax import evaluate

    out = run
    printed = (out / "results.md").read_text()
    assert "| EM / F1 | en | de | fr | avg |" in printed and "| test F1 |" in printed
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in log if "loss" in r]
    assert losses[-1] < 0.5 * losses[0], losses  # the loss falls
    table = json.loads((out / "results.json").read_text())
    assert table["train_examples"] == {"en": 48} and table["train_windows"] > 48  # long contexts: more windows
    assert table["langs"] == ["en", "de", "fr"] and table["metric"] == "f1"
    en = table["splits"]["test"]["per_lang"]["en"]
    assert en["n"] == 24 and en["f1"] >= 0.5 and 0 <= en["exact_match"] <= en["f1"] <= 1
    predictions = json.loads((out / "predictions.json").read_text())["test"]
    contexts = {p["qas"][0]["id"]: p["context"] for lang in ("valid", "de", "fr")
                for p in json.loads((data / f"{lang}.json").read_text())["data"][0]["paragraphs"]}
    assert set(predictions) == {"en", "de", "fr"}
    for lang, by_id in predictions.items():
        for qid, answer in by_id.items():
            assert answer in contexts[qid], (lang, qid, answer)  # every prediction is a span of its context
    task = json.loads((out / "best" / "task.json").read_text())
    assert task["task"] == "qa" and task["options"]["doc_stride"] == 16
    # evaluate task rebuilds the span head from the checkpoint and reproduces the fine-tuning's numbers.
    evaluate.main(["task", "--checkpoint", str(out), "--tokenizer", tiny["tok"], "--data",
                   f"en:{data / 'valid.json'}", f"de:{data / 'de.json'}", "--out", str(tmp_path / "eval")])
    again = json.loads((tmp_path / "eval" / "results.json").read_text())
    for lang in ("en", "de"):
        assert again["splits"]["test"]["per_lang"][lang] == table["splits"]["test"]["per_lang"][lang]
    assert "| test EM |" in capsys.readouterr().out


def _digest(d: Path) -> dict:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.rglob("*")) if p.is_file()}


def test_bad_qa_inputs_exit_2_with_one_line_before_training(tiny, data, run, tmp_path, capsys):
    from xlm_jax import evaluate, finetune

    bad = {}
    for name, (content, words) in _bad_files(tmp_path).items():
        bad[name] = (write(tmp_path / f"{name.replace(' ', '_')}.json", content), words)
    before = _digest(tmp_path)
    cases = [(_args(tiny, tmp_path / "o1", train=[f"en:{bad['answer not at offset'][0]}"]),
              ["answer_start=5", "question 'q7'"]),
             (_args(tiny, tmp_path / "o2", valid=[str(bad["question only"][0])]), ["question-only"]),
             (_args(tiny, tmp_path / "o3", train=[str(bad["no answers"][0])]), ["no answers", "to be trained on"]),
             (_args(tiny, tmp_path / "o4", test=[str(bad["malformed JSON"][0])]), ["not valid JSON"]),
             (_args(tiny, tmp_path / "o5", max_query_len=0, max_len=8), ["question", "max_len=8"]),
             (_args(tiny, tmp_path / "o6", max_query_len=60), ["max_query_len=60", "max_len=48"]),
             (_args(tiny, tmp_path / "o7", doc_stride=0), ["doc_stride=0"]),
             (_args(tiny, tmp_path / "o8", n_best=0), ["n_best=0"]),
             (_args(tiny, tmp_path / "o9", labels=["a", "b"]), ["fixed label set"]),
             (_args(tiny, tmp_path / "o10", train_lang="de"), ["no 'de' training questions"])]
    for argv, words in cases:
        with pytest.raises(SystemExit) as exit_info:
            finetune.main(argv)
        err = capsys.readouterr().err.strip()
        assert exit_info.value.code == 2 and err.startswith("error: ") and "\n" not in err, err
        assert all(w in err for w in words), (words, err)
        assert not Path(argv[3].split("=", 1)[1]).exists()  # nothing written: validation comes first
    # evaluate task on the QA checkpoint refuses bad files the same way, and writes nothing to --out.
    run_before = _digest(run)
    for name in ("answer not at offset", "question only", "no answers", "malformed JSON"):
        path, words = bad[name]
        with pytest.raises(SystemExit) as exit_info:
            evaluate.main(["task", "--checkpoint", str(run), "--tokenizer", tiny["tok"], "--data", str(path),
                           "--out", str(tmp_path / "eval_out")])
        err = capsys.readouterr().err.strip()
        assert exit_info.value.code == 2 and err.startswith("error: ") and "\n" not in err, err
        assert str(path) in err and all(w in err for w in words if w != "SQuAD 2.0"), (name, err)
    assert not (tmp_path / "eval_out").exists()
    assert _digest(tmp_path) == before and _digest(run) == run_before
