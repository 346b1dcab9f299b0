"""sentence-transformers directories: tiny random XLM-R models saved by sentence-transformers itself in the
multilingual-e5 layout (mean pooling, "query: " / "passage: " prompts, max_seq_length 64) and the BGE-M3 layout
(CLS pooling, normalised); our reader, and our embeddings (the converter's weights + our tokenizer + `pool`)
against `SentenceTransformer.encode`; a directory written by our writer loads in sentence-transformers with the
same vectors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")
st = pytest.importorskip("sentence_transformers")

import tiny_setup  # noqa: E402
from xlm_jax.workflows.convert import export_hf, load_any  # noqa: E402
from xlm_jax.core.errors import UserError  # noqa: E402
from xlm_jax.data.tokenizer_files import load_tokenizer  # noqa: E402
from xlm_jax.models.sentence_transformers import (SentenceEmbeddingConfig, read_sentence_transformers,  # noqa: E402
                                                  tokenize, write_sentence_transformers)
from xlm_jax.models.xlm import Encoder  # noqa: E402
from xlm_jax.tasks.contrastive import pool  # noqa: E402

TEXTS = ["the cat open file", "die katze öffnen datei drucken", "le chat",
         # longer than 64 tokens: cut to max_seq_length on both sides
         " ".join(["fenêtre fermer erreur document"] * 12)]
HIDDEN = 32


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    d = tmp_path_factory.mktemp("st")
    spm = tiny_setup.make_tokenizer(d)
    (d / "src").mkdir()
    shutil.copy(spm, d / "src" / "sentencepiece.bpe.model")
    tok = transformers.XLMRobertaTokenizer.from_pretrained(str(d / "src"))
    torch.manual_seed(0)
    cfg = transformers.XLMRobertaConfig(vocab_size=len(tok), hidden_size=HIDDEN, num_hidden_layers=2,
                                        num_attention_heads=4, intermediate_size=37, max_position_embeddings=130,
                                        type_vocab_size=1, layer_norm_eps=1e-5)
    model = transformers.XLMRobertaModel(cfg, add_pooling_layer=False)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # fresh LayerNorms and biases are (1, 0): perturb so a swapped tensor shows
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    model.save_pretrained(d / "hf")
    tok.save_pretrained(d / "hf")

    from sentence_transformers import models  # v6 maps the old module path
    e5 = st.SentenceTransformer(modules=[models.Transformer(str(d / "hf"), max_seq_length=64),
                                         models.Pooling(HIDDEN, "mean")],
                                prompts={"query": "query: ", "passage": "passage: "})
    e5.save(str(d / "e5"))
    bge = st.SentenceTransformer(modules=[models.Transformer(str(d / "hf")), models.Pooling(HIDDEN, "cls"),
                                          models.Normalize()])
    bge.save(str(d / "bge"))
    return d


def ours(directory: Path, texts, prompt_name=None) -> np.ndarray:
    cfg = read_sentence_transformers(directory)
    transformer = directory / cfg.transformer_path
    params, model_cfg, _ = load_any(transformer)
    tok = load_tokenizer(transformer)
    batch = tokenize(tok, texts, cfg, prompt_name, max_len=model_cfg.max_positions)
    hidden = Encoder(model_cfg).apply({"params": params["encoder"]}, jnp.asarray(batch["input_ids"]),
                                      jnp.asarray(batch["attention_mask"]))
    return np.asarray(pool(hidden, jnp.asarray(batch["attention_mask"]), cfg.pooling, normalize=cfg.normalize,
                           skip_first=batch["skip_first"]))


def theirs(directory: Path, texts, prompt_name=None) -> np.ndarray:
    return st.SentenceTransformer(str(directory), device="cpu").encode(texts, prompt_name=prompt_name,
                                                                        convert_to_numpy=True)


def test_read_e5_and_bge_layouts(built):
    e5 = read_sentence_transformers(built / "e5")
    assert (e5.pooling, e5.normalize, e5.max_seq_length, e5.transformer_path) == ("mean", False, 64, "")
    assert e5.prompts["query"] == "query: " and e5.prompts["passage"] == "passage: "
    assert e5.default_prompt_name is None and e5.include_prompt and e5.embedding_dimension == HIDDEN
    assert e5.prepare(["x"], "query") == ["query: x"]
    bge = read_sentence_transformers(built / "bge")
    assert (bge.pooling, bge.normalize) == ("cls", True)


def test_legacy_hub_layout(tmp_path):
    # As multilingual-e5 / BGE-M3 are published (sentence-transformers 2.x): flags, old type names, 0_Transformer.
    (tmp_path / "0_Transformer").mkdir()
    (tmp_path / "1_Pooling").mkdir()
    (tmp_path / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "0_Transformer", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]))
    (tmp_path / "1_Pooling" / "config.json").write_text(json.dumps({
        "word_embedding_dimension": 1024, "pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False,
        "pooling_mode_max_tokens": False, "pooling_mode_mean_sqrt_len_tokens": False}))
    (tmp_path / "0_Transformer" / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": 8192, "do_lower_case": False}))
    cfg = read_sentence_transformers(tmp_path)
    assert (cfg.pooling, cfg.normalize, cfg.max_seq_length, cfg.transformer_path, cfg.embedding_dimension) == (
        "cls", True, 8192, "0_Transformer", 1024)
    assert cfg.prompts == {} and cfg.prompt() == ""


@pytest.mark.parametrize("case", ["e5-query", "e5-passage", "e5-none", "bge"])
def test_our_embeddings_equal_sentence_transformers(built, case):
    name, _, prompt = case.partition("-")
    prompt = None if prompt in ("", "none") else prompt
    ref = theirs(built / name, TEXTS, prompt)
    np.testing.assert_allclose(ours(built / name, TEXTS, prompt), ref, atol=1e-5)
    if name == "e5":  # the prompt and the truncation matter: without them the vectors differ
        assert not np.allclose(ours(built / "e5", TEXTS, "query"), ours(built / "e5", TEXTS, "passage"), atol=1e-3)


def test_written_directory_loads_in_sentence_transformers(built, tmp_path):
    params, model_cfg, _ = load_any(built / "e5")
    out = tmp_path / "ours"
    cfg = SentenceEmbeddingConfig(pooling="mean", normalize=True, max_seq_length=16, prompts={"query": "query: "},
                                  default_prompt_name="query", include_prompt=False)
    transformer = write_sentence_transformers(out, cfg, HIDDEN)
    export_hf(params, model_cfg, transformer, "XLMRobertaModel")
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(built / "hf" / f, transformer / f)
    back = read_sentence_transformers(out)
    assert back == SentenceEmbeddingConfig(**{**vars(cfg), "embedding_dimension": HIDDEN})
    # Default prompt, its tokens left out of the mean, truncation to 16, normalisation: all as sentence-transformers.
    np.testing.assert_allclose(ours(out, TEXTS), theirs(out, TEXTS), atol=1e-5)
    with pytest.raises(UserError, match=r"modules\.json: exists"):
        write_sentence_transformers(out, cfg, HIDDEN)


@pytest.mark.parametrize("edit, match", [
    (lambda d: (d / "modules.json").unlink(), r"not a sentence-transformers model directory \(no modules\.json\)"),
    (lambda d: (d / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode": "median"})),
     r"1_Pooling/config\.json: pooling_mode='median' is not supported"),
    (lambda d: (d / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_fancy_tokens": True})),
     r"pooling_mode_fancy_tokens=true is a pooling mode xlm_jax does not support"),
    (lambda d: (d / "modules.json").write_text(json.dumps(json.loads((d / "modules.json").read_text()) + [
        {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"}])),
     r"module 2 is sentence_transformers\.models\.Dense, which xlm_jax does not support"),
    (lambda d: (d / "config_sentence_transformers.json").write_text(json.dumps({"prompts": {"q": "q: "},
                                                                                "default_prompt_name": "query"})),
     r"default_prompt_name='query' is not one of the prompts \(q\)"),
    (lambda d: (d / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 0})),
     r"sentence_bert_config\.json: max_seq_length 0: expected a positive integer"),
])
def test_reader_refusals(built, tmp_path, edit, match):
    d = tmp_path / "copy"
    shutil.copytree(built / "e5", d)
    edit(d)
    with pytest.raises(UserError, match=match):
        read_sentence_transformers(d)


def test_config_refusals():
    with pytest.raises(UserError, match=r"pooling='median'"):
        SentenceEmbeddingConfig(pooling="median")
    with pytest.raises(UserError, match=r"prompt_name='doc': this model's prompts are query"):
        SentenceEmbeddingConfig(prompts={"query": "q: "}).prompt("doc")
    with pytest.raises(UserError, match="transformer_path='../x'"):
        SentenceEmbeddingConfig(transformer_path="../x")
    with pytest.raises(UserError, match=r"several modes must come in the order"):
        write_sentence_transformers("/nonexistent", SentenceEmbeddingConfig(pooling=("mean", "cls")), 8)


# ------------------------------------------------------------------ xlm_jax.load of a sentence-transformers directory


@pytest.mark.parametrize("case", ["e5-query", "e5-passage", "e5-none", "e5-prompt", "bge"])
def test_load_embed_equals_sentence_transformers(built, case):
    import xlm_jax

    name, _, prompt = case.partition("-")
    m = xlm_jax.load(built / name)
    assert m.sentence is not None and m.sentence.pooling == ("cls" if name == "bge" else "mean")
    if prompt == "prompt":  # a literal prompt, as SentenceTransformer.encode(prompt=...)
        got = m.embed(TEXTS, prompt="query: ")
        ref = st.SentenceTransformer(str(built / name), device="cpu").encode(TEXTS, prompt="query: ")
    else:
        prompt = None if prompt in ("", "none") else prompt
        got, ref = m.embed(TEXTS, prompt_name=prompt), theirs(built / name, TEXTS, prompt)
    np.testing.assert_allclose(got, ref, atol=1e-5)


def test_load_refuses_unsupported_pooling_and_bad_prompts(built, tmp_path):
    import xlm_jax

    d = tmp_path / "copy"
    shutil.copytree(built / "e5", d)
    (d / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode": "median"}))
    with pytest.raises(UserError, match=r"pooling_mode='median' is not supported"):
        xlm_jax.load(d)
    m = xlm_jax.load(built / "e5")
    with pytest.raises(UserError, match=r"prompt_name='doc': this model's prompts are .*query"):
        m.embed("x", prompt_name="doc")
    with pytest.raises(UserError, match=r"give one of them"):
        m.embed("x", prompt="q: ", prompt_name="query")


# ------------------------------------------------------------------ convert --to sentence-transformers


def test_convert_to_sentence_transformers(built, tmp_path, capsys):
    import xlm_jax
    from xlm_jax import convert as C
    from xlm_jax.workflows.convert import convert

    orbax = tmp_path / "orbax"
    convert(built / "hf", orbax, to="orbax")  # our checkpoint, its sentencepiece.bpe.model beside it
    out = tmp_path / "st"
    C.main([str(orbax), str(out), "--to", "sentence-transformers", "--pooling", "cls", "--normalize",
            "--max-seq-length", "16"])
    assert "-> sentence-transformers" in capsys.readouterr().out
    cfg = read_sentence_transformers(out)
    assert (cfg.pooling, cfg.normalize, cfg.max_seq_length) == ("cls", True, 16)
    ref = theirs(out, TEXTS)
    np.testing.assert_allclose(xlm_jax.load(out).embed(TEXTS), ref, atol=1e-5)
    # Short texts (under 16 tokens): the source model's CLS vectors.
    np.testing.assert_allclose(xlm_jax.load(orbax, tokenizer=built / "src" / "sentencepiece.bpe.model").embed(
        TEXTS[:3], pooling="cls"), ref[:3], atol=1e-5)
    # A sentence-transformers source keeps its pooling, length and prompts.
    e5 = tmp_path / "e5"
    C.main([str(built / "e5"), str(e5), "--to", "sentence-transformers"])
    np.testing.assert_allclose(theirs(e5, TEXTS, "query"), theirs(built / "e5", TEXTS, "query"), atol=1e-5)
    # Bad input: one error line, exit 2, nothing written.
    with pytest.raises(SystemExit) as exit_:
        C.main([str(orbax), str(tmp_path / "bad"), "--to", "sentence-transformers", "--max-seq-length", "4096"])
    assert exit_.value.code == 2 and "--max-seq-length 4096: the model has 128 positions" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_beir_retrieval_with_a_sentence_transformers_directory(built, tmp_path):
    # evaluate retrieval --data on an e5-style directory: queries with "query: ", documents with "passage: ", as
    # SentenceTransformer.encode with those prompt names, then the same metrics.
    import xlm_jax
    from xlm_jax.tasks.retrieval_metrics import evaluate_scores
    from xlm_jax.workflows.evaluate import run_beir

    docs = {f"d{i}": t for i, t in enumerate(TEXTS + ["chien maison", "page save document"])}
    queries = {"q1": "le chat", "q2": "open file", "q3": "datei drucken"}
    qrels = {"q1": {"d2": 1}, "q2": {"d0": 1, "d5": 2}, "q3": {"d1": 1}}
    (tmp_path / "qrels").mkdir()
    (tmp_path / "corpus.jsonl").write_text("".join(json.dumps({"_id": k, "text": v}) + "\n" for k, v in docs.items()))
    (tmp_path / "queries.jsonl").write_text("".join(json.dumps({"_id": k, "text": v}) + "\n"
                                                    for k, v in queries.items()))
    (tmp_path / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(
        f"{q}\t{d}\t{g}\n" for q, r in qrels.items() for d, g in r.items()))
    _, result = run_beir(str(built / "e5"), None, str(tmp_path), load=xlm_jax.load)
    q = theirs(built / "e5", list(queries.values()), "query")
    d = theirs(built / "e5", list(docs.values()), "passage")
    q, d = (x / np.linalg.norm(x, axis=1, keepdims=True) for x in (q, d))
    expected = evaluate_scores(q @ d.T, list(queries), list(docs), qrels, (1, 10, 100))
    for key in ("ndcg@10", "mrr@10", "recall@1", "recall@10", "map"):
        assert result[key] == pytest.approx(expected[key], abs=1e-6), key
    # --query-lang / --corpus-lang label the run; an XLM-R model has no language embeddings to feed them to, so
    # they change nothing (as for a pretraining checkpoint) instead of being refused on this path only.
    _, labelled = run_beir(str(built / "e5"), None, str(tmp_path), query_lang="de", corpus_lang="en",
                           load=xlm_jax.load)
    assert (labelled["query_lang"], labelled["corpus_lang"]) == ("de", "en")
    for key in ("ndcg@10", "mrr@10", "recall@1", "recall@10", "map"):
        assert labelled[key] == result[key], key
