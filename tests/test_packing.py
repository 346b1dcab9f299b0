"""Packing: several examples per row with segment ids give the same losses, gradients and predictions as one
example per padded row (float32, 1e-5), for the XLM-R and XLM layouts and the fine-tuning heads; packed TLM
batches are pure functions of (seed, step, row); bad packing configurations are refused by name."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from xlm_jax.models.config import get_model_config
from xlm_jax.data import packing
from xlm_jax.core.errors import UserError
from xlm_jax.models.xlm import (XLMForMaskedLM, XLMForSequenceClassification, XLMForTokenClassification, init_params,
                           segment_mask, segment_positions)
from xlm_jax.training.objectives import mlm_loss

TOL = dict(rtol=1e-5, atol=1e-5)


def test_segment_positions_and_mask():
    seg = jnp.array([[1, 1, 1, 2, 2, 3, 0, 0], [1, 1, 1, 1, 1, 1, 1, 1]])
    np.testing.assert_array_equal(segment_positions(seg), [[0, 1, 2, 0, 1, 0, 0, 1], list(range(8))])
    m = np.asarray(segment_mask(seg))[0, 0]
    assert m.shape == (8, 8) and m[0, 2] and not m[0, 3] and m[3, 4] and not m[5, 6] and m[6, 7]
    assert m.any(axis=1).all()  # no query row without a key (padding attends to padding)


def _tlm_like_examples(rng, n, lang_ids=(0, 1)):
    """n examples of two halves each: (ids, positions restarting at the second half, langs per half)."""
    out = []
    for _ in range(n):
        a, b = rng.integers(3, 12), rng.integers(3, 12)
        ids = rng.integers(4, 998, size=a + b).astype(np.int32)
        ids[0] = 0
        positions = np.r_[np.arange(a), np.arange(b)].astype(np.int32)
        langs = np.r_[np.full(a, lang_ids[0]), np.full(b, lang_ids[1])].astype(np.int32)
        out.append((ids, positions, langs))
    return out


def _unpacked_mlm(examples, preds, width, pad_id):
    n, p = len(examples), max(len(x) for x in preds)
    b = {k: np.zeros((n, width), np.int32) for k in ("input_ids", "attention_mask", "positions", "langs")}
    b["input_ids"][:] = pad_id
    b["mlm_positions"] = np.zeros((n, p), np.int32)
    b["mlm_targets"] = np.full((n, p), 1, np.int32)
    b["mlm_weights"] = np.zeros((n, p), np.float32)
    for i, ((ids, pos, langs), pr) in enumerate(zip(examples, preds)):
        k = len(ids)
        b["input_ids"][i, :k], b["attention_mask"][i, :k], b["positions"][i, :k], b["langs"][i, :k] = ids, 1, pos, langs
        b["mlm_positions"][i, :len(pr)], b["mlm_targets"][i, :len(pr)], b["mlm_weights"][i, :len(pr)] = pr, ids[pr], 1
    return b


def _packed_mlm(examples, preds, width, pad_id, segments=4):
    rows = packing.first_fit([len(x[0]) for x in examples], width, segments)
    packed = packing.pack([x[0] for x in examples], rows, width, segments, pad_id)
    for field, k in (("positions", 1), ("langs", 2)):
        packed[field] = np.zeros_like(packed["input_ids"])
        packing.scatter_rows([x[k] for x in examples], packed[field], packed, range(len(examples)))
    p = sum(len(x) for x in preds)
    r = len(rows)
    b = {k: packed[k] for k in ("input_ids", "attention_mask", "positions", "langs", "segment_ids")}
    b["mlm_positions"] = np.zeros((r, p), np.int32)
    b["mlm_targets"] = np.full((r, p), 1, np.int32)
    b["mlm_weights"] = np.zeros((r, p), np.float32)
    fill = np.zeros(r, int)
    for i, pr in enumerate(preds):
        row, start = packed["slot_of"][i][0], packed["start_of"][i]
        sl = slice(fill[row], fill[row] + len(pr))
        b["mlm_positions"][row, sl] = start + np.asarray(pr)
        b["mlm_targets"][row, sl] = examples[i][0][pr]
        b["mlm_weights"][row, sl] = 1
        fill[row] += len(pr)
    return b, rows


def _assert_trees_close(a, b):
    for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), err_msg=jax.tree_util.keystr(path), **TOL)


@pytest.mark.parametrize("name", ["xlmr_tiny", "xlm_tiny", "xlm_tiny_learned"])
def test_packed_mlm_loss_and_gradients_equal_unpacked(name):
    overrides = {"dropout": 0.0, "attention_dropout": 0.0, "num_layers": 1}  # one layer: a quick compile
    if name == "xlm_tiny":
        overrides["sinusoidal_positions"] = True  # XLM's frozen sin/cos table; xlm_tiny_learned: learned rows
    cfg = get_model_config(name.replace("_learned", ""), **overrides)
    model = XLMForMaskedLM(cfg)
    params = nn.unbox(init_params(model, jax.random.key(1)))
    rng = np.random.default_rng(0)
    examples = _tlm_like_examples(rng, 7, (0, 2) if cfg.has_lang_embeddings else (0, 0))
    preds = [np.sort(rng.choice(np.arange(1, len(x[0])), size=2, replace=False)) for x in examples]
    width = 32
    unpacked = _unpacked_mlm(examples, preds, width, cfg.pad_token_id)
    packed, rows = _packed_mlm(examples, preds, width, cfg.pad_token_id)
    assert len(rows) < len(examples)  # several examples share a row

    @jax.jit
    def loss_and_grad(p, batch):
        return jax.value_and_grad(lambda q: mlm_loss(model, q, batch)[0])(p)

    (l1, g1), (l2, g2) = (loss_and_grad(params, b) for b in (unpacked, packed))
    np.testing.assert_allclose(float(l1), float(l2), **TOL)
    _assert_trees_close(g1, g2)


def _classification_batches(cfg, rng, n, width, token):
    lengths = rng.integers(3, 14, size=n)
    seqs = [np.r_[0, rng.integers(4, 998, size=k - 1)].astype(np.int32) for k in lengths]
    labels = [rng.integers(0, 3, size=k) if token else int(rng.integers(0, 3)) for k in lengths]
    ids = np.full((n, width), cfg.pad_token_id, np.int32)
    mask = np.zeros((n, width), np.int32)
    for i, s in enumerate(seqs):
        ids[i, :len(s)], mask[i, :len(s)] = s, 1
    rows = packing.first_fit(lengths, width, 3)
    packed = packing.pack(seqs, rows, width, 3, cfg.pad_token_id)
    return seqs, labels, {"input_ids": ids, "attention_mask": mask}, packed


@pytest.mark.parametrize("name,token", [("xlmr_tiny", False), ("xlm_tiny", False), ("xlm_tiny", True)])
def test_packed_heads_equal_unpacked(name, token):
    cfg = get_model_config(name, dropout=0.0, attention_dropout=0.0, num_layers=1)
    model = (XLMForTokenClassification if token else XLMForSequenceClassification)(cfg, 3)
    ids0 = jnp.zeros((1, 8), jnp.int32)
    params = nn.unbox(model.init(jax.random.key(2), ids0, jnp.ones_like(ids0), None, ids0)["params"])
    seqs, labels, unpacked, packed = _classification_batches(cfg, np.random.default_rng(3), 9, 24, token)
    langs_u = np.ones_like(unpacked["input_ids"])  # XLM: every token carries the example's language id
    langs_p = np.ones_like(packed["input_ids"])

    # Where each example's outputs are: unpacked (row i, token t) / packed (its row, its start + t or its slot).
    if token:
        u_idx = tuple(np.array(v) for v in zip(*[(i, t) for i, q in enumerate(seqs) for t in range(len(q))]))
        p_idx = tuple(np.array(v) for v in zip(*[(packed["slot_of"][i][0], packed["start_of"][i] + t)
                                                  for i, q in enumerate(seqs) for t in range(len(q))]))
        gold = np.concatenate(labels)
    else:
        u_idx, p_idx = (np.arange(len(seqs)),), tuple(packed["slot_of"].T)
        gold = np.array(labels)

    @jax.jit
    def unpacked_loss(p):
        logits = model.apply({"params": p}, unpacked["input_ids"], unpacked["attention_mask"], None, langs_u)
        picked = logits[u_idx]
        return -jax.nn.log_softmax(picked)[np.arange(len(gold)), gold].sum(), picked

    @jax.jit
    def packed_loss(p):
        logits = model.apply({"params": p}, packed["input_ids"], packed["attention_mask"], None, langs_p,
                             segment_ids=packed["segment_ids"], example_starts=packed["example_starts"])
        picked = logits[p_idx]
        return -jax.nn.log_softmax(picked)[np.arange(len(gold)), gold].sum(), picked

    (l1, lu), g1 = jax.value_and_grad(unpacked_loss, has_aux=True)(params)
    (l2, lp), g2 = jax.value_and_grad(packed_loss, has_aux=True)(params)
    np.testing.assert_allclose(float(l1), float(l2), **TOL)
    _assert_trees_close(g1, g2)
    np.testing.assert_allclose(np.asarray(lu), np.asarray(lp), **TOL)  # every example's logits, token by token


def test_first_fit_and_pack_layout():
    rows = packing.first_fit([5, 3, 4, 2, 6], 8, 2)
    assert sorted(i for r in rows for i in r) == [0, 1, 2, 3, 4]
    assert all(len(r) <= 2 and sum([5, 3, 4, 2, 6][i] for i in r) <= 8 for r in rows)
    p = packing.pack([[7] * 5, [8] * 3], [[0, 1]], 10, 2, pad_id=1, n_rows=2)
    np.testing.assert_array_equal(p["segment_ids"][0], [1] * 5 + [2] * 3 + [0] * 2)
    np.testing.assert_array_equal(p["positions"][0], [0, 1, 2, 3, 4, 0, 1, 2, 0, 0])
    np.testing.assert_array_equal(p["example_starts"], [[0, 5], [0, 0]])
    np.testing.assert_array_equal(p["example_valid"], [[1, 1], [0, 0]])
    assert not p["attention_mask"][1].any() and packing.padding_share(p["attention_mask"]) == 12 / 20


@pytest.mark.parametrize("lengths,width,segments,words", [
    ([3, 9], 8, 2, ["9 tokens", "8 tokens"]),
    ([30], 16, 4, ["30 tokens", "16 tokens"]),
    ([2, 2], 8, 0, ["segments=0", ">= 1"]),
    ([2], 8, -3, ["segments=-3"]),
])
def test_first_fit_bad_input(lengths, width, segments, words):
    with pytest.raises(UserError) as err:
        packing.first_fit(lengths, width, segments)
    assert all(w in str(err.value) for w in words)


# ------------------------------------------------------------------------------------------- packed TLM batches

from xlm_jax.data.batches import BatchSource, DataConfig  # noqa: E402


@pytest.fixture(scope="module")
def para_corpus(tmp_path_factory):
    from test_batches import _random_sentences, write_corpus

    rng = np.random.default_rng(5)
    para = {("en", "fr"): (_random_sentences(rng, 200, 1, 12), _random_sentences(rng, 200, 1, 12)),
            ("de", "en"): (_random_sentences(rng, 100, 1, 20), _random_sentences(rng, 100, 1, 20))}
    return write_corpus(tmp_path_factory.mktemp("para"), {}, para)


def _tlm_cfg(**kw):
    return DataConfig(**{**dict(seq_len=64, batch_size=8, objectives={"tlm": 1.0}, para_pairs=("en-fr", "de-en"),
                                seed=4, pack=True, pack_segments=6), **kw})


@pytest.mark.parametrize("layout", ["xlmr", "xlm"])
def test_packed_tlm_rows_hold_whole_pairs(para_corpus, layout):
    src = BatchSource(para_corpus, _tlm_cfg(tlm_layout=layout))
    b = src.batch(3)["tlm"]
    ids = b["input_ids"].copy()
    used = b["mlm_weights"] > 0
    ids[np.nonzero(used)[0], b["mlm_positions"][used]] = b["mlm_targets"][used]  # un-mask
    first = 2 if layout == "xlm" else 0
    lang_id = {"de": 0, "en": 1, "fr": 2}
    n_segments = 0
    for r in range(8):
        pair = ("en", "fr") if b["example_lang"][r] == 0 else ("de", "en")
        seg = b["segment_ids"][r]
        assert np.all((seg > 0) == (b["attention_mask"][r] > 0)) and np.all(np.diff(seg[seg > 0]) >= 0)
        for s in range(1, seg.max() + 1):
            n_segments += 1
            where = np.nonzero(seg == s)[0]
            piece, pos, langs = ids[r, where], b["positions"][r, where], b["langs"][r, where]
            assert piece[0] == first and piece[-1] == 2
            sep = np.nonzero((piece[:-1] == 2) & (piece[1:] == 2))[0][-1]
            a = sep + 1
            np.testing.assert_array_equal(pos, np.r_[np.arange(a), np.arange(len(piece) - a)])
            assert {int(langs[0]), int(langs[-1])} == {lang_id[pair[0]], lang_id[pair[1]]}
            assert len(set(langs[:a])) == 1 and len(set(langs[a:])) == 1
        assert np.all(ids[r, seg == 0] == 1)
        assert seg.max() <= 6
    assert n_segments > 2 * 8  # several pairs per row
    unpacked = BatchSource(para_corpus, _tlm_cfg(pack=False)).batch(3)["tlm"]
    assert "segment_ids" not in unpacked
    assert packing.padding_share(b["attention_mask"]) < packing.padding_share(unpacked["attention_mask"]) / 2


def test_packed_tlm_is_pure_in_seed_step_and_row(para_corpus):
    cfg = _tlm_cfg()
    a = BatchSource(para_corpus, cfg).batch(11)["tlm"]
    warm = BatchSource(para_corpus, cfg)
    warm.batch(2)
    b = warm.batch(11)["tlm"]  # resume: a fresh source and one with history agree
    parts = [BatchSource(para_corpus, cfg, pid, 2).batch(11)["tlm"] for pid in range(2)]
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
        np.testing.assert_array_equal(np.concatenate([p[k] for p in parts]), a[k])  # two processes equal one
    assert not np.array_equal(a["input_ids"], BatchSource(para_corpus, cfg).batch(12)["tlm"]["input_ids"])


def test_pack_off_and_token_batching_keep_the_unpacked_batches(para_corpus):
    plain = BatchSource(para_corpus, _tlm_cfg(pack=False)).batch(5)["tlm"]
    assert set(plain) == {"input_ids", "attention_mask", "positions", "langs", "example_lang", "mlm_positions",
                          "mlm_targets", "mlm_weights"}
    tokens = dict(tlm_batching="tokens", tlm_tokens_per_batch=512)
    for k, v in BatchSource(para_corpus, _tlm_cfg(**tokens)).batch(5)["tlm"].items():
        np.testing.assert_array_equal(v, BatchSource(para_corpus, _tlm_cfg(pack=False, **tokens)).batch(5)["tlm"][k])


@pytest.mark.parametrize("value", [0, -1])
def test_zero_segment_budget_is_refused(value):
    with pytest.raises(UserError, match=f"pack_segments={value}"):
        _tlm_cfg(pack_segments=value)


@pytest.mark.parametrize("override,words", [
    ("data.pack_segments=0", ["data.pack_segments=0", ">= 1"]),
    ("data.pack_segments=-2", ["data.pack_segments=-2"]),
    ("data.pack_segments=2.5", ["data.pack_segments"]),
    ("data.pack=maybe", ["data.pack", "maybe"]),
])
def test_train_cli_refuses_bad_packing_keys(override, words, tmp_path, capsys):
    from xlm_jax import train

    with pytest.raises(SystemExit) as err:
        train.main([f"run_dir={tmp_path / 'run'}", override])
    assert err.value.code == 2
    line = capsys.readouterr().err.strip()
    assert line.startswith("error:") and "\n" not in line and all(w in line for w in words), line
    assert not (tmp_path / "run").exists()


# ----------------------------------------------------------------------------------- fine-tuning and evaluation

FIX = __import__("pathlib").Path(__file__).parent / "fixtures" / "finetune"


@pytest.fixture(scope="module")
def ft_setup(tmp_path_factory):
    import tiny_setup

    d = tmp_path_factory.mktemp("ftpack")
    tok = tiny_setup.make_tokenizer(d)
    ckpt = tiny_setup.make_checkpoint(d)
    train = tiny_setup.write_jsonl(d / "train.jsonl", tiny_setup.task_examples("en", 24, 1))
    valid = tiny_setup.write_jsonl(d / "valid.jsonl", [e for lang in ("de", "en") for e in
                                                       tiny_setup.task_examples(lang, 12, 3)])
    return {"tok": str(tok), "ckpt": str(ckpt), "train": str(train), "valid": str(valid)}


def _ft_args(ft_setup, out, **kw):
    import json

    base = dict(task="classification", init=ft_setup["ckpt"], tokenizer=ft_setup["tok"], out=str(out),
                train=[ft_setup["train"]], valid=[ft_setup["valid"]], lr=1e-3, batch_size=8, dropout=0, log_every=1,
                max_steps=3, eval_every=3, max_len=32)
    base.update(kw)
    return [f"{k}={json.dumps(v) if isinstance(v, list) else v}" for k, v in base.items()]


@pytest.mark.parametrize("task", ["classification", "ner"])
def test_finetune_packed_equals_padded(ft_setup, tmp_path, task):
    """The same examples per step, packed or one per padded row: the same losses, accuracies and valid scores."""
    import json

    from xlm_jax import finetune as F

    extra = {}
    if task == "ner":
        extra = dict(task="ner", train=[f"en:{FIX / 'conll_en.txt'}"], valid=[f"de:{FIX / 'conll_en.txt'}"])
    logs = {}
    for pack in (True, False):
        out = tmp_path / f"p{pack}"
        F.finetune(F.load_config(None, _ft_args(ft_setup, out, pack=pack, **extra)), log=lambda *_: None)
        logs[pack] = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    steps = {p: [r for r in logs[p] if "loss" in r] for p in logs}
    assert len(steps[True]) == 3
    for a, b in zip(steps[True], steps[False]):
        for k in ("loss", "accuracy", "grad_norm"):
            assert a[k] == pytest.approx(b[k], rel=1e-5, abs=1e-6), (k, a, b)
    valid = {p: [r["valid"] for r in logs[p] if "valid" in r] for p in logs}
    assert valid[True] == valid[False]  # identical evaluation scores


def test_packed_batch_holds_the_step_examples_and_labels():
    from xlm_jax import tasks as T

    enc = T.Encoded(ids=[[0, 5, 6, 2], [0, 7, 2], [0, 8, 9, 10, 2]], labels=[2, 0, 1], langs=["en"] * 3,
                    lang_ids=[0, 1, 2], truncated=0)
    b = T.make_packed_batch(enc, [0, 1, 2], n_rows=2, width=8, segments=2, pad_id=1, token_task=False)
    assert b["input_ids"].shape == (2, 8) and b["labels"].shape == (2, 2)
    for j, r in enumerate([0, 1, 2]):
        row, slot = b["packed_at"][j]
        t = b["start_at"][j]
        assert list(b["input_ids"][row, t:t + len(enc.ids[r])]) == enc.ids[r]
        assert b["labels"][row, slot] == enc.labels[r] and b["weights"][row, slot] == 1
        assert np.all(b["langs"][row, t:t + len(enc.ids[r])] == enc.lang_ids[r])
        assert b["example_starts"][row, slot] == t
    assert b["weights"].sum() == 3
    with pytest.raises(UserError, match="do not fit in a batch of 1 rows"):
        T.make_packed_batch(enc, [0, 1, 2], n_rows=1, width=8, segments=2, pad_id=1, token_task=False)


@pytest.mark.parametrize("override,words", [
    ("pack_segments=0", ["pack_segments=0", ">= 1"]),
    ("pack_segments=-4", ["pack_segments=-4"]),
    ("pack_len=16", ["pack_len=16", "max_len=32", ">= 32"]),
    ("pack_len=-1", ["pack_len=-1"]),
    ("pack=sometimes", ["pack", "sometimes"]),
])
def test_finetune_cli_refuses_bad_packing(ft_setup, tmp_path, capsys, override, words):
    from xlm_jax import finetune as F

    out = tmp_path / "out"
    with pytest.raises(SystemExit) as err:
        F.main(_ft_args(ft_setup, out) + [override])
    assert err.value.code == 2
    line = capsys.readouterr().err.strip()
    assert line.startswith("error:") and "\n" not in line and all(w in line for w in words), line
    assert not out.exists()
