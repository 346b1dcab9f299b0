"""Fine-tuned models travel: `convert` and `finetune init=` read a fine-tuning output directory (its best
checkpoint), `convert --to hf` writes transformers' class with the head and its labels (logits equal to ours),
the reverse gives our task model with its labels, and a head is never dropped or reused silently."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import xlm_jax  # noqa: E402
from xlm_jax.convert import main as convert_main  # noqa: E402
from xlm_jax.core.errors import UserError  # noqa: E402
from xlm_jax.models import families  # noqa: E402
from xlm_jax.models.config import get_model_config  # noqa: E402
from xlm_jax.training import checkpoint  # noqa: E402
from xlm_jax.workflows import convert  # noqa: E402
from xlm_jax.workflows.finetune import init_from_checkpoint  # noqa: E402
from xlm_jax.workflows.loading import FINETUNE_CONFIG, TASK_FILE, TaskInfo, find_task_checkpoint  # noqa: E402
from xlm_jax.tasks import get_task  # noqa: E402

TOL = 1e-4
AUTO = {"sequence": "AutoModelForSequenceClassification", "token": "AutoModelForTokenClassification",
        "span": "AutoModelForQuestionAnswering"}
TASKS = {"sequence": ("xnli", ("entailment", "neutral", "contradiction")), "token": ("ner", ("O", "B-PER", "I-PER")),
         "span": ("qa", ("start", "end"))}


def _config(name: str):
    return get_model_config(name, hidden_size=32, intermediate_size=128 if name == "xlm_tiny" else 48,
                            vocab_size=50, max_positions=16, dropout=0.1, attention_dropout=0.1)


def _random_params(cfg, kind: str, n: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_map(lambda shape: rng.normal(0, 0.2, shape).astype(np.float32),
                                  convert.param_shapes(cfg, kind, n), is_leaf=lambda x: isinstance(x, tuple))


def _finetune_output(d: Path, cfg, kind: str, step: int = 7, seed: int = 0) -> tuple[Path, dict, TaskInfo]:
    """A fine-tuning output as `python -m xlm_jax.finetune` lays it out: OUT/finetune_config.json, OUT/best/<step>
    with task.json."""
    name, labels = TASKS[kind]
    info = TaskInfo(name, labels, 16)
    params = _random_params(cfg, kind, len(labels), seed)
    checkpoint.save_params(d / "best", params, cfg, step)
    (d / "best" / TASK_FILE).write_text(info.to_json())
    (d / FINETUNE_CONFIG).write_text(json.dumps({"task": name, "tokenizer": ""}))
    (d / "log.jsonl").write_text("")
    return d, params, info


def _batch(cfg):
    rng = np.random.default_rng(1)
    ids = rng.integers(5, cfg.vocab_size, size=(3, 9))
    mask = np.zeros_like(ids)
    for row, n in enumerate([9, 6, 3]):
        mask[row, :n] = 1
        ids[row, n:] = cfg.pad_token_id
    ids[:, 0] = cfg.bos_token_id
    langs = np.ones_like(ids) if cfg.has_lang_embeddings else None
    return ids, mask, langs


def _ours(cfg, kind, params, ids, mask, langs):
    model = families.task_model(cfg.replace(dropout=0.0, attention_dropout=0.0), kind, 3 if kind != "span" else 2)
    return np.asarray(model.apply({"params": params}, ids, mask, None, langs, deterministic=True))


def _theirs(out: Path, kind: str, ids, mask, langs):
    model, loading = getattr(transformers, AUTO[kind]).from_pretrained(out, output_loading_info=True)
    model.eval()
    kwargs = dict(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask))
    if langs is not None:
        kwargs["langs"] = torch.tensor(langs)
    with torch.no_grad():
        got = model(**kwargs)
    logits = (np.stack([got.start_logits.numpy(), got.end_logits.numpy()], -1) if kind == "span"
              else got.logits.numpy())
    return model, loading, logits


def _hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


# ----------------------------------------------------------------------------------------- export parity

@pytest.mark.parametrize("name,kind", [("xlmr_tiny", "sequence"), ("xlmr_tiny", "token"), ("xlmr_tiny", "span"),
                                       ("xlm_tiny", "sequence"), ("xlm_tiny", "token"), ("xlm_tiny", "span"),
                                       ("xlmr_xl_tiny", "sequence")])
def test_hf_export_keeps_the_head_and_its_labels(tmp_path, name, kind):
    cfg = _config(name)
    out, params, info = _finetune_output(tmp_path / "run", cfg, kind)
    line = convert.convert(out, tmp_path / "hf", to="hf")
    arch = convert.default_architecture(cfg, kind=kind)
    assert arch in line and f"{info.task} head" in line and "note:" not in line
    model, loading, theirs = _theirs(tmp_path / "hf", kind, *_batch(cfg))
    assert type(model).__name__ == arch
    assert not loading["missing_keys"] and not loading["unexpected_keys"] and not loading["mismatched_keys"], loading
    if kind != "span":
        assert model.config.id2label == dict(enumerate(info.labels)) and model.config.num_labels == 3
        assert model.config.label2id == {label: i for i, label in enumerate(info.labels)}
    ids, mask, langs = _batch(cfg)
    ours = _ours(cfg, kind, params, ids, mask, langs)
    if kind != "sequence":  # padded positions are not compared: neither model defines them
        ours, theirs = ours[mask == 1], theirs[mask == 1]
    np.testing.assert_allclose(theirs, ours, atol=TOL, rtol=0)

    # ... and back: our task model with its labels, in memory and as a fine-tuned checkpoint.
    loaded = xlm_jax.load(tmp_path / "hf")
    assert loaded.task.task == info.task and loaded.task.labels == info.labels
    convert.convert(tmp_path / "hf", tmp_path / "back", to="orbax")
    ckpt, back_info = find_task_checkpoint(tmp_path / "back")
    assert (back_info.task, back_info.labels, back_info.max_len) == (info.task, info.labels, info.max_len)
    restored, restored_cfg = checkpoint.restore_params(ckpt)
    assert restored_cfg == cfg
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(restored), jax.tree_util.tree_leaves(params)):
        np.testing.assert_array_equal(np.asarray(a), b, err_msg=jax.tree_util.keystr(path))


def test_hf_classifier_saved_by_transformers_loads_with_its_labels(tmp_path):
    # A classifier transformers wrote itself (no xlm_jax record): task by head kind, labels from id2label.
    config = transformers.XLMRobertaConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                           intermediate_size=48, max_position_embeddings=18,
                                           id2label={0: "neg", 1: "pos"}, label2id={"neg": 0, "pos": 1})
    torch.manual_seed(0)
    transformers.XLMRobertaForSequenceClassification(config).save_pretrained(tmp_path / "hf")
    params, cfg, info = convert.load_any(tmp_path / "hf")
    assert info.architecture == "XLMRobertaForSequenceClassification" and set(params) == {"encoder", "classifier"}
    assert (info.task.task, info.task.labels) == ("classification", ("neg", "pos"))


def test_export_hf_is_task_aware_for_callers(tmp_path):
    # The function `LoadedModel.save` calls: params + config + the TaskInfo.
    cfg = _config("xlmr_tiny")
    params = _random_params(cfg, "token", 3)
    info = TaskInfo("ner", TASKS["token"][1], 16)
    assert convert.export_hf(params, cfg, tmp_path / "a", task=info) == "XLMRobertaForTokenClassification"
    with pytest.raises(UserError, match=r"task head \(classifier\) but no task was given.*architecture=XLMRobertaModel"):
        convert.export_hf(params, cfg, tmp_path / "b")
    with pytest.raises(UserError, match=r"XLMRobertaForSequenceClassification needs a sequence head.*ner \(token\) head"
                                        r".*use XLMRobertaForTokenClassification"):
        convert.export_hf(params, cfg, tmp_path / "c", "XLMRobertaForSequenceClassification", task=info)
    assert convert.export_hf(params, cfg, tmp_path / "d", "XLMRobertaModel") == "XLMRobertaModel"


# ------------------------------------------------------------------------------ which paths convert reads

def _main(capsys, *args) -> tuple[int, str, str]:
    capsys.readouterr()
    try:
        convert_main([str(a) for a in args])
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


def test_convert_reads_output_dir_best_and_step_alike(tmp_path, capsys):
    cfg = _config("xlmr_tiny")
    out, _, _ = _finetune_output(tmp_path / "run", cfg, "sequence", step=7)
    written = []
    for i, src in enumerate((out, out / "best", out / "best" / "7")):
        code, stdout, err = _main(capsys, src, tmp_path / f"hf{i}", "--to", "hf")
        assert code == 0, err
        assert "XLMRobertaForSequenceClassification, xnli head [entailment, neutral, contradiction]" in stdout
        written.append((tmp_path / f"hf{i}" / "model.safetensors").read_bytes())
    assert written[0] == written[1] == written[2]
    code, _, err = _main(capsys, out, tmp_path / "ours")  # default for ours: hf; --to orbax keeps task.json
    assert code == 0, err
    code, _, err = _main(capsys, out, tmp_path / "orbax", "--to", "orbax")
    assert code == 0 and json.loads((tmp_path / "orbax" / TASK_FILE).read_text())["labels"] == list(TASKS["sequence"][1])


def _bad(tmp_path: Path, case: str) -> tuple[Path, list[str], str]:
    """-> (SRC, extra args, expected message) for one bad input about fine-tuning outputs."""
    cfg = _config("xlmr_tiny")
    out, _, _ = _finetune_output(tmp_path / "run", cfg, "sequence")
    if case == "output_without_best":
        empty = tmp_path / "early"
        empty.mkdir()
        (empty / FINETUNE_CONFIG).write_text("{}")
        (empty / "log.jsonl").write_text("")
        return empty, [], r"early: a fine-tuning output without a best checkpoint \(.*early/best does not exist.*give .*early/best"
    if case == "file_in_output":
        return out / "log.jsonl", [], r"not a recognised checkpoint.*the fine-tuned model here is .*run/best"
    if case == "lm_architecture":
        return out, ["--architecture", "XLMRobertaForMaskedLM"], (
            r"XLMRobertaForMaskedLM needs an LM head.*use XLMRobertaForSequenceClassification \(keeps the xnli head\)")
    if case == "other_head":
        return out / "best", ["--architecture", "XLMRobertaForTokenClassification"], (
            r"needs a fine-tuned token head, but the checkpoint has a xnli head.*use XLMRobertaForSequenceClassification")
    if case == "head_on_pretrained":
        checkpoint.save_params(tmp_path / "mlm", _random_params(cfg, None, 2), cfg)
        return tmp_path / "mlm", ["--architecture", "XLMRobertaForQuestionAnswering"], (
            r"needs a fine-tuned span head, but the checkpoint has no task head \(XLMRobertaForMaskedLM\)")
    if case == "wrong_family_head":
        return out, ["--architecture", "XLMForSequenceClassification"], r"XLMForSequenceClassification does not fit"
    raise AssertionError(case)


BAD = ("output_without_best", "file_in_output", "lm_architecture", "other_head", "head_on_pretrained",
       "wrong_family_head")


@pytest.mark.parametrize("case", BAD)
def test_convert_bad_inputs_exit_2_and_change_nothing(tmp_path, capsys, case):
    src, extra, pattern = _bad(tmp_path, case)
    before = _hashes(tmp_path)
    code, _, err = _main(capsys, src, tmp_path / "dst", "--to", "hf", *extra)
    assert code == 2, err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert re.search(pattern, err), err
    assert _hashes(tmp_path) == before and not (tmp_path / "dst").exists()


def test_encoder_only_export_of_a_fine_tuned_model_says_so(tmp_path, capsys):
    cfg = _config("xlmr_tiny")
    out, _, _ = _finetune_output(tmp_path / "run", cfg, "sequence")
    code, stdout, err = _main(capsys, out, tmp_path / "bare", "--architecture", "XLMRobertaModel")
    assert code == 0, err
    assert re.search(r"note: left out the xnli head \(labels entailment, neutral, contradiction\): XLMRobertaModel is "
                     r"the encoder alone; --architecture XLMRobertaForSequenceClassification keeps it", stdout), stdout


# --------------------------------------------------------------------------------------- finetune init=

def _init(path, task: str, labels, init_head="keep"):
    return init_from_checkpoint(str(path), get_task(task), tuple(labels), jax.random.key(0), {}, init_head)


def test_finetune_init_reads_an_output_directory_and_keeps_a_matching_head(tmp_path):
    cfg = _config("xlmr_tiny")
    out, params, _ = _finetune_output(tmp_path / "run", cfg, "sequence")
    for src in (out, out / "best", out / "best" / "7"):
        got, got_cfg, message = _init(src, "xnli", TASKS["sequence"][1])
        assert "kept the checkpoint's classifier head (its labels [entailment, neutral, contradiction]" in message
        np.testing.assert_array_equal(got["classifier"]["out_proj"]["kernel"], params["classifier"]["out_proj"]["kernel"])
    got, _, message = _init(out, "xnli", TASKS["sequence"][1], "fresh")
    assert "init_head=fresh: initialised a new xnli head" in message
    assert not np.array_equal(got["classifier"]["out_proj"]["kernel"], params["classifier"]["out_proj"]["kernel"])
    got, _, _ = _init(out, "classification", ("a", "b"), "fresh")
    assert got["classifier"]["out_proj"]["kernel"].shape == (32, 2)


@pytest.mark.parametrize("task,labels,extra", [
    ("classification", ("error", "file", "other"), ""),  # other names, same count: the silent remap of old
    ("classification", ("neutral", "entailment", "contradiction"), "labels=[entailment,neutral,contradiction]"),
    ("classification", ("entailment", "neutral"), ""),  # fewer
    ("classification", ("entailment", "neutral", "contradiction", "other"), ""),  # more
    ("pawsx", ("0", "1"), ""),
    ("ner", ("O", "B-PER", "I-PER"), ""),  # another head kind
])
def test_finetune_refuses_a_head_with_other_labels(tmp_path, task, labels, extra):
    cfg = _config("xlmr_tiny")
    out, _, _ = _finetune_output(tmp_path / "run", cfg, "sequence")
    before = _hashes(tmp_path)
    with pytest.raises(UserError) as err:
        _init(out, task, labels)
    message = str(err.value)
    assert "its xnli head has labels [entailment, neutral, contradiction]" in message
    assert f"task {task} here has labels [{', '.join(labels)}]" in message and "init_head=fresh" in message
    assert extra in message
    assert _hashes(tmp_path) == before


def test_finetune_init_of_an_output_without_best_names_the_path(tmp_path):
    (tmp_path / "early").mkdir()
    (tmp_path / "early" / FINETUNE_CONFIG).write_text("{}")
    with pytest.raises(UserError, match=r"without a best checkpoint .*give .*early/best once it exists"):
        _init(tmp_path / "early", "xnli", TASKS["sequence"][1])


def test_finetune_cli_refuses_label_mismatch_and_bad_init_head(tmp_path, capsys):
    import tiny_setup  # tests/tiny_setup.py: tiny tokenizer + task data

    from xlm_jax.finetune import main as finetune_main

    tok = tiny_setup.make_tokenizer(tmp_path)
    train = tiny_setup.write_jsonl(tmp_path / "train.jsonl", tiny_setup.task_examples("en", 8, 1))
    cfg = get_model_config("xlmr_tiny")
    run, _, _ = _finetune_output(tmp_path / "cls", cfg, "sequence")
    before = _hashes(tmp_path)
    common = [f"tokenizer={tok}", f"train=[{train}]", f"out={tmp_path / 'new'}", "max_steps=1"]
    for args, words in [
        (["task=classification", f"init={run}"], ["its xnli head has labels [entailment, neutral, contradiction]",
                                                   "task classification here has labels [file, other]",
                                                   "init_head=fresh"]),
        (["task=classification", f"init={run}/best", "labels=[other,file]"], ["labels [other, file]", "init_head=fresh"]),
        (["task=xnli", f"init={run}", "init_head=reuse"], ["init_head='reuse'", "'keep', 'fresh'"]),
    ]:
        with pytest.raises(SystemExit) as exit_:
            finetune_main(args + common)
        err = capsys.readouterr().err
        assert exit_.value.code == 2, err
        assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
        assert all(w in err for w in words), err
    assert _hashes(tmp_path) == before and not (tmp_path / "new").exists()
