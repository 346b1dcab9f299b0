"""task=contrastive (`xlm_jax.tasks.embedding`): fine-tuning a tiny XLM-R on translation pairs end to end (per-language
P@1 / nDCG@10, the output loads with its trained pooling and converts to a sentence-transformers directory with
the same vectors), GradCache in the step equal to the full-batch gradient, in-batch negatives over the sharded
global batch, the data readers (JSONL, TSV, para:, gettext:) and the bad inputs of the task's keys and files."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tiny_setup
import xlm_jax
from xlm_jax.core.errors import UserError
from xlm_jax.finetune import main as finetune_main
from xlm_jax.tasks import get_task
from xlm_jax.tasks.contrastive import ContrastiveConfig

ROOT = Path(__file__).parent.parent
E = get_task("contrastive")


def pair_rows(lang: str, n: int, seed: int, negatives: int = 0) -> list[dict]:
    """Word-for-word translations of random 4-word sentences (tiny_setup's aligned word lists)."""
    rng, words = random.Random(seed), tiny_setup.WORDS
    rows = []
    for _ in range(n):
        idx = [rng.randrange(13) for _ in range(4)]
        row = {"anchor": " ".join(words[lang][j] for j in idx), "positive": " ".join(words["en"][j] for j in idx),
               "lang": lang}
        if negatives:
            row["negatives"] = [" ".join(words["en"][rng.randrange(13)] for _ in range(4)) for _ in range(negatives)]
        rows.append(row)
    return rows


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("contrastive")
    tok, ckpt = tiny_setup.make_tokenizer(d), tiny_setup.make_checkpoint(d)
    train = tiny_setup.write_jsonl(d / "train.jsonl", pair_rows("de", 32, 0, negatives=1))
    valid = tiny_setup.write_jsonl(d / "valid.jsonl", pair_rows("de", 12, 1) + pair_rows("fr", 12, 2))
    return {"dir": d, "tok": tok, "ckpt": ckpt, "train": train, "valid": valid,
            "args": [f"init={ckpt}", f"tokenizer={tok}", "task=contrastive", "protocol=translate_train_all",
                     f"train=[{train}]", f"valid=[{valid}]", "batch_size=8", "eval_batch_size=16", "lr=1e-3",
                     "max_steps=4", "eval_every=2", "log_every=1"]}


# ------------------------------------------------------------------------------------------------ end to end


@pytest.fixture(scope="module")
def run(setup, tmp_path_factory):
    out = tmp_path_factory.mktemp("ctr_run") / "out"
    finetune_main(setup["args"] + [f"out={out}", f"test=[{setup['valid']}]", "contrastive.pooling=cls",
                                   "contrastive.symmetric=true", "contrastive.matryoshka_dims=[16,32]",
                                   "contrastive.query_prefix='query: '", "contrastive.passage_prefix='passage: '",
                                   "contrastive.temperature=0.1", "max_len=32"])
    return out


def test_fine_tuning_reports_retrieval_per_language(run):
    table = json.loads((run / "results.json").read_text())
    assert table["task"] == "contrastive" and table["langs"] == ["de", "fr"]
    for split in ("valid", "test"):
        for lang in ("de", "fr"):
            scores = table["splits"][split]["per_lang"][lang]
            assert scores["n"] == 12 and 0 <= scores["p@1"] <= 1 and scores["p@1"] <= scores["ndcg@10"] <= 1
    assert table["contrastive"]["pooling"] == "cls" and table["contrastive"]["matryoshka_dims"] == [16, 32]
    assert "valid nDCG@10" in (run / "results.md").read_text()
    task = json.loads((run / "best" / "task.json").read_text())
    assert task["task"] == "contrastive" and task["options"]["query_prefix"] == "query: "


def test_the_output_embeds_with_its_trained_pooling_and_converts_to_sentence_transformers(run, tmp_path):
    st = pytest.importorskip("sentence_transformers")
    m = xlm_jax.load(run)
    assert m.sentence.pooling == "cls" and m.sentence.normalize and m.sentence.max_seq_length == 32
    assert m.sentence.prompts == {"query": "query: ", "passage": "passage: "}
    texts = ["die katze öffnen datei", "the cat open file", " ".join(["fenster schließen"] * 20)]
    ours = m.embed(texts)
    # The trained pooling is CLS: mean pooling gives other vectors.
    assert not np.allclose(ours, m.embed(texts, pooling="mean"), atol=1e-3)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, rtol=1e-5)
    dst = tmp_path / "st"
    from xlm_jax.convert import main as convert_main

    convert_main([str(run), str(dst), "--to", "sentence-transformers"])
    pooling = json.loads((dst / "1_Pooling" / "config.json").read_text())
    assert pooling["pooling_mode_cls_token"] and not pooling["pooling_mode_mean_tokens"]
    ref = st.SentenceTransformer(str(dst), device="cpu")
    np.testing.assert_allclose(ref.encode(texts), ours, atol=1e-5)
    np.testing.assert_allclose(ref.encode(texts, prompt_name="query"), m.embed(texts, prompt_name="query"), atol=1e-5)


def test_convert_says_when_pooling_replaces_the_trained_one(run, tmp_path, capsys):
    """`convert --pooling` over a contrastive output's trained pooling (cls, task.json): used, with one `warning:`
    line naming both (issue 21; convert notes overrides, it does not refuse them); the trained one: no warning."""
    from xlm_jax.convert import main as convert_main

    capsys.readouterr()
    convert_main([str(run), str(tmp_path / "mean"), "--to", "sentence-transformers", "--pooling", "mean"])
    err = capsys.readouterr().err
    warned = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warned) == 1 and "--pooling mean replaces the cls pooling that" in warned[0], err
    assert str(run) in warned[0] and "task.json" in warned[0]
    pooling = json.loads((tmp_path / "mean" / "1_Pooling" / "config.json").read_text())
    assert pooling["pooling_mode_mean_tokens"] and not pooling["pooling_mode_cls_token"]
    convert_main([str(run), str(tmp_path / "cls"), "--to", "sentence-transformers", "--pooling", "cls"])
    assert "warning:" not in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ the step


def _tiny_model_and_batch(n_pairs: int = 8, negatives: int = 1):
    import dataclasses

    import flax.linen as nn

    from xlm_jax.models.config import get_model_config
    from xlm_jax.models.xlm import init_params
    from xlm_jax.tasks.embedding import PairFeatures, SentenceEmbedder, make_batch

    cfg = dataclasses.replace(get_model_config("xlmr_tiny"), vocab_size=40, hidden_size=32, intermediate_size=48,
                              num_layers=1, max_positions=24, dropout=0.0, attention_dropout=0.0)
    model = SentenceEmbedder(cfg, "mean", True)
    params = nn.unbox(init_params(model, jax.random.key(0)))
    rng = np.random.default_rng(0)

    def text():
        return [0] + rng.integers(4, 40, size=int(rng.integers(2, 9))).tolist() + [2]

    feats = PairFeatures([text() for _ in range(n_pairs)], [text() for _ in range(n_pairs)],
                         [[text() for _ in range(negatives)] for _ in range(n_pairs)], [0] * n_pairs, [0] * n_pairs,
                         0, negatives)
    batch = make_batch(feats, range(n_pairs), n_pairs, 16, 1)
    return model, params, batch


def test_grad_cache_in_the_step_equals_the_full_batch_gradient():
    from xlm_jax.tasks.embedding import step_loss

    model, params, batch = _tiny_model_and_batch()
    count = jnp.float32(8)
    cfg = dict(temperature=0.05, symmetric=True, matryoshka_dims=(8, 32))
    plain = step_loss(model, ContrastiveConfig(**cfg))
    assert plain.grad is None
    grads, sums = jax.jit(jax.grad(plain.fn, has_aux=True))(params, batch, jax.random.key(1), count)
    for chunk in (2, 4):
        cached = step_loss(model, ContrastiveConfig(**cfg, grad_cache_chunk=chunk))
        g2, s2 = jax.jit(cached.grad)(params, batch, jax.random.key(1), count)
        np.testing.assert_allclose(s2["loss_sum"], sums["loss_sum"], rtol=1e-5)
        assert float(s2["correct"]) == float(sums["correct"])
        for a, b in zip(jax.tree.leaves(g2), jax.tree.leaves(grads), strict=True):
            np.testing.assert_allclose(a, b, atol=1e-5)


SHARDED_STEP = """
import sys
sys.path.insert(0, "tests")
import jax, jax.numpy as jnp, numpy as np
from test_finetune_contrastive import _tiny_model_and_batch
from xlm_jax.tasks.contrastive import ContrastiveConfig
from xlm_jax.tasks.embedding import step_loss
from xlm_jax.training.sharding import MeshConfig, make_mesh, batch_sharding
assert jax.device_count() == 8
model, params, batch = _tiny_model_and_batch(16, 1)
cfg = ContrastiveConfig(temperature=0.05, symmetric=True)
loss, cached = step_loss(model, cfg), step_loss(model, ContrastiveConfig(temperature=0.05, symmetric=True,
                                                                          grad_cache_chunk=8))
count, key = jnp.float32(16), jax.random.key(0)
single = jax.jit(jax.grad(loss.fn, has_aux=True), device=jax.devices()[0])(params, batch, key, count)
mesh = make_mesh(MeshConfig(data=8))
sharded_batch = jax.device_put(batch, batch_sharding(mesh))
assert sharded_batch["anchor_ids"].addressable_shards[0].data.shape[0] == 2
with jax.set_mesh(mesh):
    sharded = jax.jit(jax.grad(loss.fn, has_aux=True))(params, sharded_batch, key, count)
    by_cache = jax.jit(cached.grad)(params, sharded_batch, key, count)
for got in (sharded, by_cache):
    np.testing.assert_allclose(got[1]["loss_sum"], single[1]["loss_sum"], rtol=1e-5)
    for a, b in zip(jax.tree.leaves(got[0]), jax.tree.leaves(single[0]), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)
# Per-device pools (2 pairs each) would give another loss: the sharded step saw the global batch.
local = []
for i in range(0, 16, 2):
    part = {k: v[i:i + 2] for k, v in batch.items()}
    local.append(float(loss.fn(params, part, key, jnp.float32(2))[1]["loss_sum"]) / 2)
assert abs(np.mean(local) - float(single[1]["loss_sum"]) / 16) > 1e-2, (local, single[1])
print("ok")
"""


def test_the_fine_tuning_step_pools_negatives_over_the_data_parallel_mesh():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu",
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(SHARDED_STEP)], env=env, capture_output=True,
                          text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().endswith("ok")


# ------------------------------------------------------------------------------------------------ readers


def test_jsonl_tsv_and_sentence_transformers_names(tmp_path):
    j = tmp_path / "p.jsonl"
    j.write_text('{"query": "q1", "pos": ["p1"], "neg": ["n1", "n2"]}\n\n{"anchor": "a", "positive": "b", '
                 '"negatives": "c", "lang": "de"}\n')
    a, b = E.read(j, None)
    assert (a.anchor, a.positive, a.negatives, a.lang) == ("q1", "p1", ("n1", "n2"), "en")
    assert (b.negatives, b.lang, b.where) == (("c",), "de", f"{j}:3")
    t = tmp_path / "p.tsv"
    t.write_text("query\tpos\tneg_1\tlang\nq\tp\tn\tfr\n")
    (x,) = E.read(t, "de")
    assert (x.anchor, x.positive, x.negatives, x.lang) == ("q", "p", ("n",), "fr")


def test_parallel_files_and_the_gettext_default(tmp_path, monkeypatch):
    para = tmp_path / "para"
    para.mkdir()
    en = [f"english sentence number {i}" for i in range(400)]
    (para / "de-en.de").write_text("".join(f"deutscher satz {i}\n" for i in range(400)))
    (para / "de-en.en").write_text("".join(x + "\n" for x in en))
    every = E.read(Path(f"para:{para / 'de-en'}"), None)
    assert len(every) == 400 and every[0].anchor == "deutscher satz 0" and every[0].positive == en[0]
    assert (every[0].lang, every[0].anchor_lang, every[0].positive_lang) == ("de", "de", "en")
    splits = {s: E.read(Path(f"para:{para / 'de-en'}:{s}"), None) for s in ("train", "valid", "test")}
    assert sum(map(len, splits.values())) == 400 and all(splits.values())
    assert not {e.positive for e in splits["train"]} & {e.positive for e in splits["valid"] + splits["test"]}
    # gettext:XX is para: on the cached corpus (built there when missing; here a small fake one).
    (tmp_path / "gettext").mkdir()
    (para).rename(tmp_path / "gettext" / "para")
    (tmp_path / "gettext" / "stats.json").write_text(json.dumps({"languages": {"de": {"pairs": 400}}}))
    monkeypatch.setenv("XLM_JAX_CACHE", str(tmp_path))
    assert [e.anchor for e in E.read(Path("gettext:de:valid"), None)] == [e.anchor for e in splits["valid"]]
    with pytest.raises(UserError, match=r"gettext:fr: the gettext corpus .* has no en-fr pairs \(languages: de\)"):
        E.read(Path("gettext:fr"), None)
    with pytest.raises(UserError, match=r"gettext:de:dev: the split after the language must be one of train"):
        E.read(Path("gettext:de:dev"), None)


# ------------------------------------------------------------------------------------------------ bad input


def _bad(setup, tmp_path, capsys, *extra) -> str:
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_:
        finetune_main(setup["args"] + [f"out={out}", *extra])
    err = capsys.readouterr().err
    assert exit_.value.code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert not out.exists()
    return lines[0]


@pytest.mark.parametrize("content, message", [
    ('{"anchor": "a", "positive": "b"}\n{"anchor": "c"}\n', r"bad\.jsonl:2: no 'positive' field"),
    ('{"anchor": "a", "positive": "  "}\n', r"bad\.jsonl:1: field 'positive' is an empty text"),
    ('{"anchor": "a", "positive": "b", "negatives": ["", "x"]}\n', r"bad\.jsonl:1: field 'negatives\[0\]' is an empty"),
    ('{"anchor": "a", "positive": "b"}\n{"anchor": "a", "positive": "b", "negatives": ["x"]}\n',
     r"bad\.jsonl:2: 1 hard negative\(s\), but .*bad\.jsonl:1 has 0"),
])
def test_a_bad_pairs_file_is_one_error_line(setup, tmp_path, capsys, content, message):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(content)
    import re
    assert re.search(message, _bad(setup, tmp_path, capsys, f"train=[{bad}]"))


def test_a_bad_tsv_is_one_error_line(setup, tmp_path, capsys):
    bad = tmp_path / "bad.tsv"
    bad.write_text("anchor\tpositive\na\t\n")
    assert f"{bad}:2: field 'positive' is an empty text" in _bad(setup, tmp_path, capsys, f"train=[{bad}]")
    bad.write_text("text\tlabel\na\tb\n")
    assert f"{bad}:1: the header 'text\\tlabel' must name an 'anchor'" in _bad(setup, tmp_path, capsys,
                                                                               f"train=[{bad}]")


@pytest.mark.parametrize("extra, message", [
    (["contrastive.temperature=0"], "contrastive.temperature=0"),
    (["contrastive.temperature=-0.5"], "contrastive.temperature=-0.5"),
    (["contrastive.matryoshka_dims=[16,128]"], "contrastive.matryoshka_dims[1]=128: at most the embedding size 64"),
    (["contrastive.grad_cache_chunk=16"], "contrastive.grad_cache_chunk=16: must divide batch_size=8 (valid: 0 = "
                                          "off, or one of 1, 2, 4, 8)"),
    (["contrastive.grad_cache_chunk=3"], "contrastive.grad_cache_chunk=3: must divide batch_size=8"),
    (["contrastive.pooling=avg"], "contrastive.pooling"),
])
def test_bad_contrastive_keys_are_one_error_line(setup, tmp_path, capsys, extra, message):
    assert message in _bad(setup, tmp_path, capsys, *extra)


def test_bad_pair_files_name_the_file_and_line(tmp_path):
    # A TSV row without its positive; a JSONL positive that is not text; a parallel corpus with an empty line or
    # files of different lengths.
    t = tmp_path / "p.tsv"
    t.write_text("anchor\tpositive\na\tb\nonly an anchor\n")
    with pytest.raises(UserError, match=rf"{t}:3: 1 tab-separated fields, expected 2 .*a missing field"):
        E.read(t, None)
    j = tmp_path / "p.jsonl"
    j.write_text('{"anchor": "a", "positive": 3}\n')
    with pytest.raises(UserError, match=rf"{j}:1: field 'positive' is 3, expected a string"):
        E.read(j, None)
    (tmp_path / "de-en.de").write_text("eins\n\ndrei\n")
    (tmp_path / "de-en.en").write_text("one\ntwo\nthree\n")
    with pytest.raises(UserError, match=rf"de-en\.de:2: empty line"):
        E.read(Path(f"para:{tmp_path / 'de-en'}"), None)
    (tmp_path / "de-en.de").write_text("eins\nzwei\n")
    with pytest.raises(UserError, match=r"de-en\.de has 2 lines but .*de-en\.en has 3"):
        E.read(Path(f"para:{tmp_path / 'de-en'}"), None)


def test_the_shipped_config_loads_with_its_documented_command():
    import dataclasses
    import shlex

    import yaml

    from xlm_jax.workflows import finetune as F

    path = ROOT / "configs" / "finetune_contrastive.yaml"
    text = path.read_text()
    cfg = F.load_config(str(path))
    for key, value in yaml.safe_load(text).items():  # every key is a field and keeps its value
        got = getattr(cfg, key)
        got = dataclasses.asdict(got) if dataclasses.is_dataclass(got) else got
        if isinstance(value, dict):
            got = {k: list(got[k]) if isinstance(got[k], tuple) else got[k] for k in value}
        assert (list(got) if isinstance(got, tuple) else got) == value, key
    command = shlex.split(text.splitlines()[0].lstrip("# "))
    assert command[:4] == ["python", "-m", "xlm_jax.finetune", "configs/finetune_contrastive.yaml"]
    documented = F.load_config(str(ROOT / command[3]), command[4:])
    assert documented.task == "contrastive" and documented.out.startswith("runs/")
    documented.contrastive.check_batch(documented.batch_size)
