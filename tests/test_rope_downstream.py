"""Everything downstream of the model on the ModernBERT / EuroBERT families (tiny models, few steps): MLM
pretraining from scratch (`model.base=modernbert_tiny`), continued pretraining from an HF checkpoint
(`model.init_from`, step-0 loss = transformers'), vocabulary extension of an untied LM projection, the input
framing of tokenizer.json tokenizers, fine-tuning from a converted checkpoint that carries its tokenizer.json,
and the notebook API (embed / retrieve / fill-mask / predict) on converted directories."""

from __future__ import annotations

import json
import shutil

import flax.linen as nn
import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import rope_parity as rp  # noqa: E402
import rope_setup as rs  # noqa: E402
import tiny_setup  # noqa: E402
import xlm_jax  # noqa: E402
from xlm_jax.core.errors import UserError  # noqa: E402
from xlm_jax.data.hf_tokenizer import HFTokenizer  # noqa: E402
from xlm_jax.data.tokenizer import Tokenizer  # noqa: E402
from xlm_jax.models import families  # noqa: E402
from xlm_jax.models.config import get_model_config  # noqa: E402
from xlm_jax.pretrain import adapt  # noqa: E402
from xlm_jax.pretrain.config import load_config  # noqa: E402
from xlm_jax.tasks import InputProtocol  # noqa: E402
from xlm_jax.train import train  # noqa: E402
from xlm_jax.training import checkpoint  # noqa: E402
from xlm_jax.training.metrics import read_metrics  # noqa: E402
from xlm_jax.workflows import finetune as F  # noqa: E402
from xlm_jax.workflows.convert import convert  # noqa: E402
from xlm_jax.workflows.convert import load_any as convert_load  # noqa: E402

TOL = 2e-5


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A tiny SentencePiece model (fairseq ids), a raw en/de/fr corpus, a shared data cache."""
    d = tmp_path_factory.mktemp("rope_env")
    tok_path = tiny_setup.make_tokenizer(d)
    corpus = d / "corpus" / "mono"
    corpus.mkdir(parents=True)
    for lang in ("en", "de", "fr"):
        shutil.copy(d / f"{lang}.txt", corpus / f"{lang}.txt")
    return {"dir": d, "tok_path": tok_path, "tok": Tokenizer.load(tok_path), "corpus": d / "corpus",
            "cache": d / "cache"}


def _args(env, run_dir, *extra):
    return [f"data.corpus={env['corpus']}", f"data.cache_dir={env['cache']}", f"run_dir={run_dir}",
            "data.objectives={mlm: 1}", "data.valid_fraction=0", "train.steps=3", "train.batch_size=4",
            "train.seq_len=24", "train.log_every=1", "train.eval_every=0", "train.progress=false",
            "optimizer.warmup_steps=1", "optimizer.lr=1e-2", "checkpoint.async_save=false",
            f"data.tokenizer={env['tok_path']}", *extra]


def _losses(run_dir):
    return {r["step"]: r["mlm/loss"] for r in read_metrics(run_dir) if r["kind"] == "train"}


# ------------------------------------------------------------------------------------------- pretraining


@pytest.mark.parametrize("base", ["modernbert_tiny", "eurobert_tiny"])
def test_pretrain_mlm_from_scratch(env, tmp_path, base):
    run_dir = tmp_path / "run"
    assert train(load_config(None, _args(env, run_dir, f"model.base={base}"))) == 0
    losses = _losses(run_dir)
    assert sorted(losses) == [1, 2, 3] and all(np.isfinite(list(losses.values())))
    assert losses[3] < losses[1]
    params, cfg = checkpoint.restore_params(run_dir)
    assert cfg.family == base.split("_")[0] and cfg.vocab_size == len(env["tok"])
    # The run's special ids are its tokenizer's (fairseq layout), whatever the named config had.
    assert (cfg.pad_token_id, cfg.mask_id) == (env["tok"].pad_id, env["tok"].mask_id)
    model = xlm_jax.load(run_dir)
    assert len(model.fill_mask("the cat <mask> house", top_k=2)[0]) == 2


@pytest.mark.parametrize("base", ["modernbert_tiny", "eurobert_tiny"])
def test_tlm_step_on_rope_families(tmp_path, base):
    """TLM for the RoPE families (docs/successors.md "TLM"): each pair `<s> a </s></s> b </s>` in one row, RoPE
    positions restarting at the second sentence (XLM's TLM), language ids ignored (no language embeddings). The
    packed TLM batch predicts tokens on both sides of its pairs; one training step gives a finite TLM loss; the
    restart reaches the model (its loss differs with the same rows numbered straight through) and the language
    ids do not."""
    from test_batches import MASK, V, _random_sentences, write_corpus

    from xlm_jax.data.batches import BatchSource, DataConfig
    from xlm_jax.training import optim, sharding
    from xlm_jax.training import step as step_lib
    from xlm_jax.models.xlm import segment_positions

    rng = np.random.default_rng(3)
    corpus = write_corpus(tmp_path / "pre", {}, {("de", "en"): (_random_sentences(rng, 60, 2, 14),
                                                                _random_sentences(rng, 60, 2, 14))})
    data = DataConfig(seq_len=48, batch_size=4, objectives={"tlm": 1.0}, para_pairs=("de-en",), seed=2,
                      mask_prob=0.3)
    batch = BatchSource(corpus, data).batch(0)["tlm"]
    ids, seg, pos = batch["input_ids"], batch["segment_ids"], batch["positions"]
    sides = 0
    for r in range(len(ids)):
        for s in range(1, seg[r].max() + 1):
            where = np.nonzero(seg[r] == s)[0]
            a = int(np.nonzero(pos[r, where][1:] == 0)[0][0]) + 1  # the second sentence starts at position 0 again
            np.testing.assert_array_equal(pos[r, where], np.r_[np.arange(a), np.arange(len(where) - a)])
            predicted = set(batch["mlm_positions"][r][batch["mlm_weights"][r] > 0].tolist())
            sides += bool(predicted & set(where[:a].tolist())) and bool(predicted & set(where[a:].tolist()))
    assert sides > 0  # some pair has masked tokens in both its sentences
    cfg = get_model_config(base, vocab_size=V, mask_token_id=MASK, dropout=0.0, attention_dropout=0.0)
    mesh = sharding.make_mesh(sharding.MeshConfig(data=1), devices=jax.devices()[:1])
    tx = optim.make_optimizer(optim.OptimizerConfig(lr=1e-3, warmup_steps=1), 10)
    state, shardings = step_lib.init_state(cfg, tx, mesh, jax.random.key(0))
    sums = step_lib.make_eval_step(cfg, mesh, shardings, objective="tlm")(state["params"],
                                                                          sharding.global_batch(mesh, batch))
    train_step = step_lib.make_train_step(cfg, tx, mesh, shardings, {"tlm": 1.0}, {"tlm": 1})
    state, metrics = train_step(state, sharding.global_batch(mesh, {"tlm": batch}), jax.random.key(1))
    assert np.isfinite(float(metrics["tlm/loss"]))
    assert float(metrics["tlm/loss"]) == pytest.approx(float(sums["loss_sum"] / sums["count"]), rel=1e-4)

    # The model reads the batch's positions and ignores its language ids: hidden states with weights far from the
    # initialisation (at init, attention is near uniform and positions barely show).
    leaves, tree = jax.tree_util.tree_flatten(nn.unbox(state["params"]))
    keys = jax.random.split(jax.random.key(2), len(leaves))
    params = tree.unflatten([x + 0.3 * jax.random.normal(k, x.shape, x.dtype) for x, k in zip(leaves, keys)])
    model = families.masked_lm(cfg)

    def hidden(positions, langs):
        return np.asarray(model.apply({"params": params}, ids, batch["attention_mask"], positions, langs,
                                      segment_ids=seg))[seg > 0]

    want = hidden(pos, batch["langs"])
    assert np.abs(hidden(np.asarray(segment_positions(seg)), batch["langs"]) - want).max() > 1e-3
    np.testing.assert_array_equal(hidden(pos, np.zeros_like(batch["langs"])), want)


def _hf_mlm(family, vocab, tok):
    """A random HF masked LM on `tok`'s ids (fairseq layout: <s> 0, <pad> 1, </s> 2, <unk> 3, <mask> last)."""
    # EuroBERT's unk is its eos unless the config names one: a fairseq vocabulary has its own <unk>, so it does.
    ids = dict(pad_token_id=tok.pad_id, bos_token_id=tok.bos_id, eos_token_id=tok.eos_id, mask_token_id=tok.mask_id,
               unk_token_id=tok.unk_id)
    if family == "modernbert":
        ids |= dict(cls_token_id=tok.bos_id, sep_token_id=tok.eos_id)
    config = rs.hf_config(family, vocab_size=vocab, **ids)
    torch.manual_seed(0)
    model = rp.randomize(rs.hf_class(family, "mlm")(config))
    model.config._attn_implementation = "eager"
    return model


def _torch_mlm_loss(model, batch):
    kwargs = {"input_ids": torch.tensor(np.asarray(batch["input_ids"], np.int64)),
              "attention_mask": torch.tensor(np.asarray(batch["attention_mask"], np.int64))}
    if batch.get("positions") is not None:  # RoPE positions count from 0, as HF's position_ids
        kwargs["position_ids"] = torch.tensor(np.asarray(batch["positions"], np.int64))
    with torch.no_grad():
        logits = model(**kwargs).logits.double().numpy()
    picked = np.take_along_axis(logits, np.asarray(batch["mlm_positions"])[..., None], axis=1)
    log_z = np.log(np.exp(picked - picked.max(-1, keepdims=True)).sum(-1)) + picked.max(-1)
    nll = log_z - np.take_along_axis(picked, np.asarray(batch["mlm_targets"])[..., None], -1)[..., 0]
    w = np.asarray(batch["mlm_weights"], np.float64)
    return float((nll * w).sum() / w.sum())


def _first_batch(run_dir):
    from xlm_jax.data.batches import BatchSource
    from xlm_jax.data.corpus import PreprocessedCorpus
    from xlm_jax.pretrain.data import make_data_config

    cfg = load_config(run_dir / "config.yaml")
    corpus = PreprocessedCorpus(cfg.data.dir)
    return BatchSource(corpus, make_data_config(cfg, corpus)).batch(0)["mlm"]


@pytest.mark.parametrize("family", ["modernbert", "eurobert"])
def test_continued_pretraining_from_hf_step0_loss_equals_transformers(env, tmp_path, family):
    model = _hf_mlm(family, len(env["tok"]), env["tok"])
    hf = tmp_path / "hf"
    model.save_pretrained(str(hf))
    shutil.copy(env["tok_path"], hf / "sentencepiece.bpe.model")
    run_dir = tmp_path / "run"
    args = [a for a in _args(env, run_dir, f"model.init_from={hf}") if not a.startswith("data.tokenizer=")]
    assert train(load_config(None, args)) == 0
    losses = _losses(run_dir)
    assert losses[1] == pytest.approx(_torch_mlm_loss(model, _first_batch(run_dir)), abs=TOL, rel=TOL)
    assert all(np.isfinite(list(losses.values())))
    after, _ = checkpoint.restore_params(run_dir)  # the steps changed the converted weights
    ours, _, _ = convert_load(hf)
    assert not np.array_equal(np.asarray(after["encoder"]["embeddings"]["word_embeddings"]["embedding"]),
                              np.asarray(ours["encoder"]["embeddings"]["word_embeddings"]["embedding"]))
    assert checkpoint.load_model_config(run_dir).family == family


def test_init_from_converted_checkpoint_and_trainable_embeddings(env, tmp_path):
    """The converted (orbax) EuroBERT — untied, no LM-head bias — continues with train.trainable=embeddings: the
    word embeddings and the untied projection train, everything else stays bit for bit."""
    hf = tmp_path / "hf"
    _hf_mlm("eurobert", len(env["tok"]), env["tok"]).save_pretrained(str(hf))
    shutil.copy(env["tok_path"], hf / "sentencepiece.bpe.model")
    convert(hf, tmp_path / "ours")
    before, _ = checkpoint.restore_params(tmp_path / "ours")
    run_dir = tmp_path / "run"
    # The orbax export carries no SentencePiece model: the run names the one the checkpoint was made with.
    args = _args(env, run_dir, f"model.init_from={tmp_path / 'ours'}", "train.trainable=embeddings")
    assert train(load_config(None, args)) == 0
    after, _ = checkpoint.restore_params(run_dir)
    for path, old in zip(adapt.param_paths(before), jax.tree.leaves(before)):
        new = dict(zip(adapt.param_paths(after), jax.tree.leaves(after)))[path]
        trained = path in ("encoder/embeddings/word_embeddings/embedding", "lm_head/decoder/kernel")
        assert np.array_equal(np.asarray(old), np.asarray(new)) != trained, path


def test_vocabulary_extension_of_an_untied_projection(env, tmp_path):
    from xlm_jax.data import vocab
    from xlm_jax.models.vocab_extension import extend_embeddings

    new_text = tmp_path / "ka.txt"
    new_text.write_text("\n".join(["გამარჯობა ფაილი გახსნა დახურვა შეცდომა"] * 50) + "\n", encoding="utf-8")
    vocab.extend_tokenizer(str(env["tok_path"]), [str(new_text)], 20, str(tmp_path / "ext.model"))
    ext = Tokenizer.load(tmp_path / "ext.model")
    tok = env["tok"]
    cfg = get_model_config("eurobert_tiny", vocab_size=len(tok), bos_token_id=0, pad_token_id=1, eos_token_id=2,
                           unk_token_id=3, mask_token_id=-1)
    params = rp.random_params(families.masked_lm(cfg), 0)
    out, new_cfg = extend_embeddings(params, cfg, tok, ext)
    v, n = len(tok), len(ext)
    kernel, new_kernel = params["lm_head"]["decoder"]["kernel"], out["lm_head"]["decoder"]["kernel"]
    assert new_kernel.shape == (cfg.hidden_size, n) and new_cfg.vocab_size == n
    np.testing.assert_array_equal(new_kernel[:, :v - 1], kernel[:, :v - 1])
    np.testing.assert_array_equal(new_kernel[:, n - 1], kernel[:, v - 1])  # <mask> moved to the last id
    assert not np.allclose(new_kernel[:, v - 1:n - 1], 0)
    logits = rp.ours(families.masked_lm(new_cfg), jax.tree.map(np.asarray, out), np.array([[0, 5, n - 2, 2]]),
                     np.ones((1, 4)), method=families.masked_lm(new_cfg).mlm_logits)
    assert logits.shape == (1, 4, n) and np.isfinite(logits).all()


# ---------------------------------------------------------------------------------------- tokenizer framing


@pytest.mark.parametrize("family", ["modernbert", "eurobert"])
def test_task_framing_is_the_tokenizers(tmp_path, family):
    """Fine-tuning frames rows with the model's special ids as its tokenizer.json does: [CLS] A [SEP] (B [SEP])."""
    tok = HFTokenizer.load(rs.tokenizer(tmp_path, family))
    hf = rs.hf_config(family)
    from xlm_jax.models import hf_families
    cfg, _ = hf_families.module_for(family).hf_config_to_model_config(hf.to_dict(), "test")
    protocol = InputProtocol.from_config(cfg)
    a, b = "the cat open file", "die katze"
    pa, pb = (tok.encode_pieces_ids(t, special_tokens=False) for t in (a, b))
    assert protocol.frame(pa, None) == tok.encode(a)
    assert protocol.frame(pa, pb) == tok.encode_pair(a, b)
    assert protocol.n_specials(True) == len(tok.encode_pair(a, b)) - len(pa) - len(pb)


# ------------------------------------------------------------------------------- fine-tuning and notebook API


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """Each family's random HF masked LM with its tokenizer.json, converted to our format: {family: (dir, model)}."""
    out = {}
    for family in ("modernbert", "eurobert"):
        d = tmp_path_factory.mktemp(family)
        model = rs.saved_model(d / "hf", family)
        convert(d / "hf", d / "ours")
        out[family] = (d, model)
    return out


@pytest.mark.parametrize("family", ["modernbert", "eurobert"])
def test_notebook_api_on_converted_directories(converted, family):
    d, hf_model = converted[family]
    for where in (d / "ours", d / "hf"):
        m = xlm_jax.load(where)
        assert isinstance(m.tokenizer, HFTokenizer) and m.config.family == family
        texts = ["the cat open file", "die katze öffnen datei", "le chat ouvrir fichier"]
        batch = m.tokenizer.batch_encode(texts, 16)
        ids, mask = np.asarray(batch["input_ids"]), np.asarray(batch["attention_mask"])
        want = rp.hf_logits(hf_model, ids.astype(np.int64), mask.astype(np.int64))
        rp.assert_padded_equal(np.asarray(m.mlm_logits(ids, mask)), want, mask, True)
        emb = m.embed(texts)
        assert emb.shape == (3, m.config.hidden_size)
        idx, scores = m.retrieve(texts, texts, k=1)
        assert idx.shape == scores.shape == (3, 1)
        mask_token = rs.FAMILIES[family][0][4]
        filled = m.fill_mask(f"the {mask_token} dog", top_k=3)
        assert len(filled[0]) == 3


def _squad(path, n: int):
    """SQuAD 1.1 json of `n` questions over contexts of the tiny tokenizer.json's words; the answer is the animal."""
    rows = []
    for i in range(n):
        context = ["the cat open file", "le chat ouvrir fichier", "die katze öffnen datei"][i % 3]
        animal = context.split()[1]
        answer = {"text": animal, "answer_start": context.index(animal)}
        rows.append({"context": context, "qas": [{"id": f"q{i}", "question": "what is it", "answers": [answer]}]})
    path.write_text(json.dumps({"version": "1.1", "data": [{"title": "t", "paragraphs": rows}]}))
    return path


@pytest.mark.parametrize("family,task", [("modernbert", "classification"), ("eurobert", "classification"),
                                         ("modernbert", "ner"), ("eurobert", "qa")])
def test_finetune_from_a_converted_checkpoint(converted, tmp_path, family, task):
    d, _ = converted[family]
    if task == "classification":
        train_file = tiny_setup.write_jsonl(tmp_path / "train.jsonl", tiny_setup.task_examples("en", 32, 0))
        valid = tiny_setup.write_jsonl(tmp_path / "valid.jsonl", tiny_setup.task_examples("de", 8, 1))
    elif task == "qa":
        train_file, valid = _squad(tmp_path / "train.json", 16), _squad(tmp_path / "valid.json", 6)
    else:
        rows = ["the O\ncat B-ANIMAL\nopen O\nfile O\n", "le O\nchat B-ANIMAL\nouvrir O\n"] * 8
        train_file = tmp_path / "en.conll"
        train_file.write_text("\n".join(rows) + "\n")
        valid = train_file
    out = tmp_path / "ft"
    args = [f"task={task}", f"init={d / 'ours'}", f"out={out}", f"train={json.dumps([str(train_file)])}",
            f"valid={json.dumps([str(valid)])}", "max_steps=4", "batch_size=8", "lr=1e-3", "dropout=0",
            "eval_every=4", "log_every=2"]
    F.finetune(F.load_config(None, args), log=lambda _: None)
    assert (out / "tokenizer.json").is_file()
    m = xlm_jax.load(out)
    assert isinstance(m.tokenizer, HFTokenizer) and m.config.family == family and m.task.task == task
    if task == "classification":
        assert m.predict("the cat open file").label in ("file", "other")
    elif task == "qa":
        assert m.answer("what is it", "the cat open file") is not None
    else:
        assert len(m.predict_tokens([["the", "cat", "open"]])[0]) == 3
    if (family, task) == ("eurobert", "qa"):  # transformers has no EuroBertForQuestionAnswering: said, not guessed
        with pytest.raises(UserError, match="EuroBertModel"):
            convert(out, tmp_path / "hf_out", to="hf")
        assert not (tmp_path / "hf_out").exists()
        return
    # And the fine-tuned model exports to transformers with its head.
    convert(out, tmp_path / "hf_out", to="hf")
    auto = {"classification": transformers.AutoModelForSequenceClassification,
            "ner": transformers.AutoModelForTokenClassification,
            "qa": transformers.AutoModelForQuestionAnswering}[task]
    assert type(auto.from_pretrained(str(tmp_path / "hf_out"))).__name__.startswith(rs.PREFIX[family])


def test_pretrain_bad_model_fields_one_error_line(env, tmp_path, capsys):
    """A window or RoPE theta that is not positive, a global-every-n beyond the layers, a key / value head count
    that does not divide the heads: one `error:` line naming the key, exit 2, no run directory, no data."""
    from xlm_jax.train import main as train_main

    cases = [("modernbert_tiny", "model.local_window=0", "model.local_window"),
             ("modernbert_tiny", "model.rope_theta=0", "model.rope_theta"),
             ("modernbert_tiny", "model.local_rope_theta=-5", "model.local_rope_theta"),
             ("modernbert_tiny", "model.global_attn_every_n=5", "model.global_attn_every_n"),
             ("eurobert_tiny", "model.num_kv_heads=3", "model.num_kv_heads=3")]
    for base, extra, words in cases:
        run_dir, cache = tmp_path / extra.split("=")[0], tmp_path / "cache"
        args = [a for a in _args(env, run_dir, f"model.base={base}", extra) if not a.startswith("data.cache_dir=")]
        capsys.readouterr()
        with pytest.raises(SystemExit) as e:
            train_main(args + [f"data.cache_dir={cache}"])
        err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert e.value.code == 2 and len(err) == 1 and err[0].startswith("error:") and words in err[0], err
        assert not run_dir.exists() and not cache.exists()


# ------------------------------------------------------------------------------------------------- bench


def test_bench_modernbert_same_function_on_both_sides(tmp_path):
    """bench's ModernBERT configuration: the JAX step and transformers' ModernBertForMaskedLM (all-position logits
    and head at masked positions only) start from the same weights and give the same eval loss; each side trains."""
    from xlm_jax.bench.jax_side import JaxWorker
    from xlm_jax.bench.torch_side import TorchWorker
    from xlm_jax.bench.workload import CONFIGS, hf_architecture
    from xlm_jax.models.config import to_dict

    cfg = CONFIGS["smoke_modernbert"]
    assert hf_architecture(cfg.model) == "ModernBertForMaskedLM"
    assert CONFIGS["cpu_mmbert"].model.vocab_size == 256000 and CONFIGS["cpu_mmbert"].model.global_attn_every_n == 3
    base = {"config": cfg.name, "model": to_dict(cfg.model), "batch": cfg.batch, "seq_len": cfg.seq_len,
            "device": "cpu", "threads": 1, "cpus": None, "seed": 0, "max_steps": 4}
    weights = str(tmp_path / "w.npz")
    jax_worker = JaxWorker({**base, "framework": "jax", "weights": None})
    want = jax_worker.export_weights(weights)["eval_loss"]
    for fw in ("torch_eager", "torch_masked"):
        worker = TorchWorker({**base, "framework": fw, "weights": weights})
        assert not worker.load_report["missing"] and not worker.load_report["unexpected"], worker.load_report
        assert worker.export_weights("")["eval_loss"] == pytest.approx(want, abs=1e-4)
        assert np.isfinite(worker.warmup(1)["loss_first"])
    assert np.isfinite(jax_worker.warmup(1)["loss_first"])


@pytest.mark.parametrize("extra, family", [((), "modernbert"), (("model.base=eurobert_tiny",), "eurobert")])
def test_the_modernbert_config_resolves_to_its_family(extra, family):
    """configs/modernbert_gettext.yaml (and its EuroBERT variant on its second command line) builds the family."""
    from pathlib import Path

    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "modernbert_gettext.yaml", list(extra))
    model = cfg.model.resolve(vocab_size=100, bos_token_id=0, pad_token_id=1, eos_token_id=2, unk_token_id=3,
                              mask_token_id=99)
    assert model.family == family and model.num_layers == 3
