"""Tries bad inputs of every kind on the command-line tools and the Python API, as a new user would, and writes
the table of docs/reliability.md.

    python experiments/bad_inputs.py WORK_DIR [--out docs/results/bad_inputs.json] [--only SUBSTRING]

Builds tiny fixtures in WORK_DIR (a SentencePiece model, a random `xlmr_tiny` checkpoint, a small corpus, its
preprocessed arrays, a 4-step pretraining run, a fine-tuned classifier and a folder of the user's own files), then
runs each case in a fresh process and records its exit code, the last line of stderr, whether a traceback was
printed, whether any file that existed before the case was changed or removed (by SHA-256) and, for a refusal
(exit 2), whether any new file or directory appeared in the watched folders. API cases run a
short Python snippet that prints `UserError: <message>` (or the exception's type) and exits 2 on a refusal.

A case passes when it exits with the expected code, prints no traceback, its message is one `error:` line (CLI),
no pre-existing file changed and (exit 2) nothing new was written. The script exits 1 if any case fails.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

PY = sys.executable

API = """
import sys, numpy as np, xlm_jax
from xlm_jax.core.errors import UserError
from xlm_jax.data.tokenizer import Tokenizer
try:
{body}
except UserError as err:
    print(f"{{type(err).__name__}}: {{err}}", file=sys.stderr); sys.exit(2)
"""


def build_fixtures(w: Path) -> dict[str, str]:
    import tiny_setup

    if (w / "fixtures.json").is_file():
        return json.loads((w / "fixtures.json").read_text())
    w.mkdir(parents=True, exist_ok=True)
    f: dict[str, str] = {}
    f["tok"] = str(tiny_setup.make_tokenizer(w))
    f["ckpt"] = str(tiny_setup.make_checkpoint(w))
    corpus = w / "corpus"
    (corpus / "mono").mkdir(parents=True, exist_ok=True)
    (corpus / "para").mkdir(exist_ok=True)
    for lang, words in tiny_setup.WORDS.items():
        (corpus / "mono" / f"{lang}.txt").write_text(
            "\n".join(" ".join(words[(i + k) % len(words)] for k in range(6)) for i in range(200)) + "\n")
    en, de = tiny_setup.WORDS["en"], tiny_setup.WORDS["de"]
    (corpus / "para" / "de-en.de").write_text("\n".join(" ".join(de[(i + k) % len(de)] for k in range(5)) for i in range(100)) + "\n")
    (corpus / "para" / "de-en.en").write_text("\n".join(" ".join(en[(i + k) % len(en)] for k in range(5)) for i in range(100)) + "\n")
    f["corpus"] = str(corpus)
    f["pre"] = str(w / "pre")
    run([PY, "-m", "xlm_jax.preprocess", str(corpus), "--tokenizer", f["tok"], "--out", f["pre"],
         "--valid-fraction", "0.1", "--workers", "1"], check=True)
    f["run"] = str(w / "pretrain_run")
    run([PY, "-m", "xlm_jax.train", f"run_dir={f['run']}", f"data.dir={f['pre']}", "train.steps=4",
         "train.batch_size=4", "train.seq_len=32", "optimizer.warmup_steps=1", "train.log_every=2", "train.eval_every=2", "checkpoint.every=2",
         "train.progress=false"], check=True)
    f["train_jsonl"] = str(tiny_setup.write_jsonl(w / "train.jsonl", tiny_setup.task_examples("en", 16, 1)))
    f["valid_jsonl"] = str(tiny_setup.write_jsonl(
        w / "valid.jsonl", tiny_setup.task_examples("en", 8, 2) + tiny_setup.task_examples("de", 8, 3)))
    f["ft"] = str(w / "ft_run")
    run([PY, "-m", "xlm_jax.finetune", "task=classification", f"init={f['ckpt']}", f"tokenizer={f['tok']}",
         f"out={f['ft']}", f"train=[{f['train_jsonl']}]", f"valid=[{f['valid_jsonl']}]", "max_steps=2",
         "batch_size=8", "log_every=1"], check=True)
    nli = [{"gold_label": g, "sentence1": "the file is open", "sentence2": h}
           for g, h in (("entailment", "a file is open"), ("contradiction", "the file is closed"), ("neutral", "the cat"))]
    f["nli_jsonl"] = str(tiny_setup.write_jsonl(w / "nli.jsonl", nli * 4))
    (w / "surrogate.jsonl").write_text(Path(f["train_jsonl"]).read_text()
                                       + '{"text": "the \\ud800 file", "label": "file", "lang": "en"}\n')
    f["surrogate_jsonl"] = str(w / "surrogate.jsonl")
    (w / "tab.yaml").write_text("train:\n\tsteps: 4\n")
    f["tab_yaml"] = str(w / "tab.yaml")
    (w / "not_utf8.jsonl").write_bytes(b'{"text": "caf\xe9 ouvert", "label": "file", "lang": "en"}\n' * 4)
    f["not_utf8"] = str(w / "not_utf8.jsonl")
    (w / "not_utf8.txt").write_bytes(b"caf\xe9 ouvert\n" * 4)
    f["not_utf8_txt"] = str(w / "not_utf8.txt")
    (w / "en.txt").write_text("the file is open\nthe window is closed\n")
    f["en_txt"] = str(w / "en.txt")
    (w / "wide.tsv").write_text("text\tlabel\nthe file\tfile\nthe cat\tother\textra\n")
    f["wide_tsv"] = str(w / "wide.tsv")
    binary = w / "binary_corpus"
    shutil.copytree(corpus, binary)
    shutil.copyfile("/bin/ls", binary / "mono" / "xx.txt")
    f["binary_corpus"] = str(binary)
    broken = w / "pre_missing_array"
    shutil.copytree(f["pre"], broken)
    next((broken / "train" / "mono").glob("*.ids.npy")).unlink()
    f["pre_missing"] = str(broken)
    damaged = w / "ckpt_damaged"
    shutil.copytree(f["ckpt"], damaged)
    victim = max((p for p in damaged.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    victim.write_bytes(b"\0" * 64)
    f["ckpt_damaged"] = str(damaged)
    other_tok = w / "other_tok"
    other_tok.mkdir(exist_ok=True)
    from xlm_jax.data.tokenizer import train_tokenizer

    train_tokenizer([str(corpus)], 50, str(other_tok / "o.model"))  # another vocabulary
    f["other_tok"] = str(other_tok / "o.model")
    f["pre_other"] = str(w / "pre_other_tok")
    run([PY, "-m", "xlm_jax.preprocess", str(corpus), "--tokenizer", f["other_tok"], "--out", f["pre_other"],
         "--valid-fraction", "0.1", "--workers", "1"], check=True)
    f["a_file"] = str(w / "a_file.txt")
    Path(f["a_file"]).write_text("I am a file, not a directory\n")
    (w / "fixtures.json").write_text(json.dumps(f, indent=1))
    return f


def build_new_fixtures(w: Path, f: dict[str, str]) -> dict[str, str]:
    """Fixtures of the commands and keys added later (QA, BUCC / Tatoeba, tokenizer extend, init_from), added to a
    cached fixtures.json without rebuilding the rest."""
    import tiny_setup

    if "init_damaged" in f:
        return f
    en = tiny_setup.WORDS["en"]
    paragraphs = []
    for i in range(8):
        context = " ".join(en[(i + k) % 5] for k in range(6)) + " file."
        paragraphs.append({"context": context, "qas": [{"id": f"q{i}", "question": "which file?",
                                                        "answers": [{"text": "file", "answer_start": context.index("file")}]}]})
    squad = {"version": "1.1", "data": [{"title": "t", "paragraphs": paragraphs}]}
    (w / "squad_train.json").write_text(json.dumps(squad))
    f["squad_train"] = str(w / "squad_train.json")
    shifted = json.loads(json.dumps(squad))
    shifted["data"][0]["paragraphs"][3]["qas"][0]["answers"][0]["answer_start"] += 2  # not where the text is
    (w / "squad_shifted.json").write_text(json.dumps(shifted))
    f["squad_shifted"] = str(w / "squad_shifted.json")
    de = tiny_setup.WORDS["de"]
    bucc = w / "bucc"
    bucc.mkdir(exist_ok=True)
    for split in ("sample", "test"):
        (bucc / f"de-en.{split}.de").write_text("".join(f"de-{i:06d}\t{de[i]} {de[i + 1]}\n" for i in range(6)))
        (bucc / f"de-en.{split}.en").write_text("".join(f"en-{i:06d}\t{en[i]} {en[i + 1]}\n" for i in range(6)))
        (bucc / f"de-en.{split}.gold").write_text("".join(f"de-{i:06d}\ten-{i:06d}\n" for i in range(3)))
    f["bucc"] = str(bucc)
    bucc_bad = w / "bucc_gold_absent"
    shutil.copytree(bucc, bucc_bad, dirs_exist_ok=True)
    (bucc_bad / "de-en.test.gold").write_text("de-000001\ten-000001\nde-000042\ten-000002\n")
    f["bucc_gold_absent"] = str(bucc_bad)
    tat = w / "tatoeba_uneven"
    tat.mkdir(exist_ok=True)
    (tat / "tatoeba.deu-eng.deu").write_text("die katze\ndas haus\ndie datei\n")
    (tat / "tatoeba.deu-eng.eng").write_text("the cat\nthe house\n")
    f["tatoeba_uneven"] = str(tat)
    tat_ok = w / "tatoeba"
    tat_ok.mkdir(exist_ok=True)
    (tat_ok / "tatoeba.deu-eng.deu").write_text("die katze\ndas haus\n")
    (tat_ok / "tatoeba.deu-eng.eng").write_text("the cat\nthe house\n")
    f["tatoeba"] = str(tat_ok)
    damaged = w / "init_damaged"  # the pretraining run (same vocabulary as WORK/pre) with an array file zeroed
    shutil.rmtree(damaged, ignore_errors=True)
    shutil.copytree(f["run"], damaged)
    arrays = [p for d in (damaged / "checkpoints").glob("*/params") for p in d.rglob("*") if p.is_file()]
    max(arrays, key=lambda p: p.stat().st_size).write_bytes(b"\0" * 64)  # init_from reads only the params
    f["init_damaged"] = str(damaged)
    (w / "empty_dir").mkdir(exist_ok=True)
    f["empty_dir"] = str(w / "empty_dir")
    (w / "fixtures.json").write_text(json.dumps(f, indent=1))
    return f


def user_dir(w: Path) -> Path:
    """A fresh folder of the user's own files for each case that writes."""
    d = w / "user_folder"
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir()
    (d / "notes.txt").write_text("my notes\n")
    (d / "draft.md").write_text("# my draft\n")
    link = w / "user_folder_link"
    if not link.is_symlink():
        link.symlink_to(d)
    return d


def cases(f: dict[str, str], u: str) -> list[tuple[str, str, list[str], int]]:
    """(kind, what, argv, expected exit code). `u` is the user's folder (notes.txt, draft.md)."""
    train = [PY, "-m", "xlm_jax.train", "train.progress=false", "train.steps=4", "train.batch_size=4", "train.seq_len=32",
             "optimizer.warmup_steps=1"]
    ft = [PY, "-m", "xlm_jax.finetune", "task=classification", f"init={f['ckpt']}", f"tokenizer={f['tok']}",
          f"train=[{f['train_jsonl']}]", f"valid=[{f['valid_jsonl']}]", "max_steps=2", "batch_size=8"]
    ev = [PY, "-m", "xlm_jax.evaluate"]
    retrieval = ev + ["retrieval", "--checkpoint", f["ckpt"], "--tokenizer", f["tok"], "--src-file", f["en_txt"],
                      "--tgt-file", f["en_txt"]]
    task = ev + ["task", "--checkpoint", f["ft"], "--tokenizer", f["tok"], "--data", f["valid_jsonl"]]

    extend = [PY, "-m", "xlm_jax.tokenizer", "extend", "--base", f["tok"], "--add", "4"]
    tatoeba = ev + ["tatoeba", "--checkpoint", f["ckpt"], "--tokenizer", f["tok"], "--backend", "numpy"]
    bucc = ev + ["bucc", "--checkpoint", f["ckpt"], "--tokenizer", f["tok"], "--backend", "numpy"]
    qa = [PY, "-m", "xlm_jax.finetune", "task=qa", f"init={f['ckpt']}", f"tokenizer={f['tok']}",
          f"train=[{f['squad_train']}]", f"valid=[{f['squad_train']}]", "max_steps=2", "batch_size=4", "max_len=48",
          "max_query_len=8", "doc_stride=16"]
    bench = [PY, "-m", "xlm_jax.bench", "--smoke", "--configs", "tiny", "--out", f"{u}/bench"]
    nb = f"m = xlm_jax.load({f['ckpt']!r}, tokenizer={f['tok']!r})"

    def api(body: str) -> list[str]:
        return [PY, "-c", API.format(body="\n".join("    " + line for line in body.strip().splitlines()))]

    return [
        # 1. output locations
        ("output", "preprocess --out a folder of the user's files",
         [PY, "-m", "xlm_jax.preprocess", f["corpus"], "--tokenizer", f["tok"], "--out", u], 2),
        ("output", "gettext corpus into a folder of the user's files", [PY, "-m", "xlm_jax.data.gettext", u], 2),
        ("output", "convert into a folder of the user's files", [PY, "-m", "xlm_jax.convert", f["ckpt"], u], 2),
        ("output", "train run_dir= a folder of the user's files", train + [f"run_dir={u}", f"data.dir={f['pre']}"], 2),
        ("output", "finetune out= a pretraining run directory", ft + [f"out={f['run']}"], 2),
        ("output", "finetune out= a folder of the user's files", ft + [f"out={u}"], 2),
        ("output", "evaluate task --out a folder of the user's files", task + ["--out", u], 2),
        ("output", "tokenizer train --output an existing file",
         [PY, "-m", "xlm_jax.tokenizer", "train", "--input", f["corpus"], "--vocab-size", "60", "--output",
          f"{u}/notes.txt"], 2),
        ("output", "plot --out an existing file", [PY, "-m", "xlm_jax.plot", f["run"], "--out", f"{u}/draft.md"], 2),
        ("output", "train run_dir= an existing file", train + [f"run_dir={f['a_file']}", f"data.dir={f['pre']}"], 2),
        ("output", "finetune out= an existing file", ft + [f"out={f['a_file']}"], 2),
        ("output", "convert into a symbolic link to a folder of the user's files",
         [PY, "-m", "xlm_jax.convert", f["ckpt"], f"{u}_link"], 2),
        ("output", "plot --out a file name that is not an image", [PY, "-m", "xlm_jax.plot", f["run"], "--out",
                                                                    f"{u}/curves.txt"], 2),
        # 2. configuration values
        ("config", "model.dtype=fp16", train + ["model.dtype=fp16"], 2),
        ("config", "model.dtype=float16", train + ["model.dtype=float16"], 2),
        ("config", "model.num_heads=0", train + ["model.num_heads=0"], 2),
        ("config", "model.num_heads=3 (128 hidden)", train + ["model.num_heads=3"], 2),
        ("config", "model.dropout=1.5", train + ["model.dropout=1.5"], 2),
        ("config", "data.objectives={mlm: -1.0}", train + ["data.objectives={mlm: -1.0}"], 2),
        ("config", "data.objectives={mlm: 0}", train + ["data.objectives={mlm: 0, tlm: 0}"], 2),
        ("config", "data.mask_prob=1.5", train + ["data.mask_prob=1.5"], 2),
        ("config", "optimizer.lr=-1", train + ["optimizer.lr=-1"], 2),
        ("config", "train.eval_langs=[zz] (checked against the data)",
         train + [f"run_dir={f['a_file']}.new", f"data.dir={f['pre']}", "train.eval_langs=[zz]"], 2),
        ("config", "finetune epochs=-3", ft + [f"out={u}/ft", "epochs=-3", "max_steps=0"], 2),
        ("config", "finetune max_steps=-1", ft + [f"out={u}/ft", "max_steps=-1"], 2),
        ("config", "finetune select_on=zz (checked against the data)", ft + [f"out={u}/ft", "select_on=zz"], 2),
        ("config", "finetune task=xnli max_len=3", ft[:3] + ["task=xnli", "max_len=3"] + ft[4:6] + [f"train=[{f['nli_jsonl']}]", f"valid=[{f['nli_jsonl']}]"] + ft[8:] + [f"out={u}/ft"], 2),
        ("config", "evaluate task --batch-size 0", task + ["--batch-size", "0"], 2),
        ("config", "train.steps=10**20 (beyond int32)", train + ["train.steps=100000000000000000000"], 2),
        ("config", "finetune max_steps=3000000000", ft + [f"out={u}/ft", "max_steps=3000000000"], 2),
        ("config", "YAML config with a tab", train + [f["tab_yaml"]], 2),
        ("config", "evaluate retrieval --max-len 0", retrieval + ["--max-len", "0"], 2),
        ("config", "preprocess --valid-fraction 1.5",
         [PY, "-m", "xlm_jax.preprocess", f["corpus"], "--tokenizer", f["tok"], "--out", f"{u}/pre",
          "--valid-fraction", "1.5"], 2),
        ("config", "tokenizer train --vocab-size 0",
         [PY, "-m", "xlm_jax.tokenizer", "train", "--input", f["corpus"], "--vocab-size", "0", "--output",
          f"{u}/t.model"], 2),
        # 3. the Python API
        ("api", "hidden_states with an id >= the vocabulary",
         api(f"m = xlm_jax.load({f['ckpt']!r})\nprint(m.hidden_states(np.array([[0, 5, 1000, 2]])))"), 2),
        ("api", "hidden_states with a negative id",
         api(f"m = xlm_jax.load({f['ckpt']!r})\nprint(m.hidden_states(np.array([[0, -4, 2]])))"), 2),
        ("api", "129 tokens into a model with 128 positions",
         api(f"m = xlm_jax.load({f['ckpt']!r})\nprint(m.hidden_states(np.full((1, 129), 5)))"), 2),
        ("api", "mlm_logits of a fine-tuned classifier",
         api(f"m = xlm_jax.load({f['ft'] + '/best'!r})\nprint(m.mlm_logits(np.array([[0, 5, 2]])))"), 2),
        ("api", "xlm_jax.load(None)", api("xlm_jax.load(None)"), 2),
        ("api", "attention_mask of another shape",
         api(f"m = xlm_jax.load({f['ckpt']!r})\nprint(m.hidden_states(np.array([[0, 5, 2]]), np.ones((1, 4), int)))"), 2),
        # 4. files that are not what they claim
        ("file", "finetune train file not UTF-8", ft + [f"out={u}/ft", f"train=[{f['not_utf8']}]"], 2),
        ("file", "retrieval file not UTF-8",
         ev + ["retrieval", "--checkpoint", f["ckpt"], "--tokenizer", f["tok"], "--src-file", f["not_utf8_txt"],
               "--tgt-file", f["not_utf8_txt"]], 2),
        ("file", "tokenizer train on a corpus with a binary mono/xx.txt",
         [PY, "-m", "xlm_jax.tokenizer", "train", "--input", f["binary_corpus"], "--vocab-size", "60", "--output",
          f"{u}/t.model"], 2),
        ("file", "preprocess a corpus with a binary mono/xx.txt",
         [PY, "-m", "xlm_jax.preprocess", f["binary_corpus"], "--tokenizer", f["tok"], "--out", f"{u}/pre"], 2),
        ("file", "classification TSV row with more fields than its header",
         ft + [f"out={u}/ft", f"train=[{f['wide_tsv']}]"], 2),
        ("file", "NER fine-tuning on a classification JSONL (one 'label')",
         ft[:3] + ["task=ner"] + ft[4:] + [f"out={u}/ft"], 2),
        ("file", "a JSONL text holding an escaped lone surrogate",
         ft + [f"out={u}/ft", f"train=[{f['surrogate_jsonl']}]"], 2),
        ("file", "preprocessed directory missing an array file",
         train + [f"run_dir={u}/run", f"data.dir={f['pre_missing']}"], 2),
        ("file", "xlm_jax.load of a checkpoint with a damaged array file",
         api(f"m = xlm_jax.load({f['ckpt_damaged']!r})\nprint(m.hidden_states(np.array([[0, 5, 2]])))"), 2),
        ("file", "a tokenizer model that is not one", api(f"Tokenizer.load({f['a_file']!r})"), 2),
        # 5. failures in the middle of a run
        ("run", "fine-tuning whose loss becomes NaN (lr=1000)", ft + [f"out={u}/ft", "lr=1000", "max_steps=20",
                                                                      "log_every=1"], 3),
        ("run", "resume a run on data preprocessed with another tokenizer",
         train + [f"run_dir={f['run']}", f"data.dir={f['pre_other']}", "train.steps=6"], 2),
        # 6. tokenizer
        ("tokenizer", "batch_encode(max_len=1)",
         api(f"t = Tokenizer.load({f['tok']!r})\nprint(t.batch_encode(['the file is open'], max_len=1))"), 2),
        ("tokenizer", "encode('Open the <mask> now') maps <mask> to the mask id",
         api(f"t = Tokenizer.load({f['tok']!r})\nids = t.encode('open the <mask> now')\n"
             f"assert t.mask_id in ids, ids\nprint('mask id', t.mask_id, 'in', ids)"), 0),
        # 7. commands and keys added later: tokenizer extend, evaluate tatoeba / bucc, finetune task=qa and packing,
        # continued pretraining (model.init_from, data.tokenizer, train.trainable), data.pack, bench --sides,
        # the notebook API
        ("file", "tokenizer extend --new-characters-only on text the base already covers (no new pieces)",
         extend + ["--input", f["en_txt"], "--new-characters-only", "--output", f"{u}/t2.model"], 2),
        ("file", "tokenizer extend --base a file that is not a SentencePiece model",
         [PY, "-m", "xlm_jax.tokenizer", "extend", "--base", f["a_file"], "--input", f["en_txt"], "--add", "4",
          "--output", f"{u}/t2.model"], 2),
        ("file", "tokenizer extend --input a missing file", extend + ["--input", f"{u}/missing.txt", "--output",
                                                                      f"{u}/t2.model"], 2),
        ("output", "tokenizer extend --output the base model itself", extend + ["--input", f["en_txt"], "--output",
                                                                                f["tok"]], 2),
        ("config", "tokenizer extend --add 0", extend[:-2] + ["--add", "0", "--input", f["en_txt"], "--output",
                                                              f"{u}/t2.model"], 2),
        ("file", "evaluate tatoeba on files of different line counts", tatoeba + ["--data", f["tatoeba_uneven"]], 2),
        ("file", "evaluate tatoeba --data a missing directory", tatoeba + ["--data", f"{u}/nowhere"], 2),
        ("config", "evaluate tatoeba --layer 99 (the model has 2 layers)",
         tatoeba + ["--data", f["tatoeba"], "--layer", "99"], 2),
        ("output", "evaluate tatoeba --out an existing file of the user's",
         tatoeba + ["--data", f["tatoeba_uneven"], "--out", f"{u}/notes.txt"], 2),
        ("file", "evaluate bucc with a gold id absent from the sentence files", bucc + ["--data", f["bucc_gold_absent"]], 2),
        ("file", "evaluate bucc --data a Tatoeba directory (no gold files)", bucc + ["--data", f["tatoeba_uneven"]], 2),
        ("config", "evaluate bucc --tune-split sample --test-split sample",
         bucc + ["--data", f["bucc"], "--tune-split", "sample", "--test-split", "sample"], 2),
        ("config", "evaluate bucc --k 0", bucc + ["--data", f["bucc"], "--k", "0"], 2),
        ("file", "finetune task=qa, a SQuAD answer not at its answer_start", qa + [f"out={u}/ft", f"train=[{f['squad_shifted']}]"], 2),
        ("file", "finetune task=qa on a classification JSONL",
         qa + [f"out={u}/ft", f"train=[{f['train_jsonl']}]"], 2),
        ("file", "finetune task=qa train= a missing file", qa + [f"out={u}/ft", f"train=[{u}/missing.json]"], 2),
        ("config", "finetune task=qa doc_stride=0", qa + [f"out={u}/ft", "doc_stride=0"], 2),
        ("config", "finetune task=qa max_query_len=60 with max_len=48", qa + [f"out={u}/ft", "max_query_len=60", "max_len=48"], 2),
        ("config", "finetune task=qa n_best=0", qa + [f"out={u}/ft", "n_best=0"], 2),
        ("config", "finetune task=qa max_answer_length=-1", qa + [f"out={u}/ft", "max_answer_length=-1"], 2),
        ("config", "finetune task=qa n_best=many (not an integer)", qa + [f"out={u}/ft", "n_best=many"], 2),
        ("config", "finetune pack_len=16 smaller than max_len=32", ft + [f"out={u}/ft", "max_len=32", "pack_len=16"], 2),
        ("config", "finetune pack_segments=0", ft + [f"out={u}/ft", "pack_segments=0"], 2),
        ("config", "finetune pack=maybe", ft + [f"out={u}/ft", "pack=maybe"], 2),
        ("config", "finetune pack_len=-8", ft + [f"out={u}/ft", "pack_len=-8"], 2),
        ("file", "train model.init_from= a text file, not a checkpoint",
         train + [f"run_dir={u}/run", f"data.dir={f['pre']}", f"model.init_from={f['a_file']}"], 2),
        ("file", "train model.init_from= an empty directory",
         train + [f"run_dir={u}/run", f"data.dir={f['pre']}", f"model.init_from={f['empty_dir']}"], 2),
        ("file", "train model.init_from= a run whose checkpoint has a damaged array file",
         train + [f"run_dir={u}/run", f"data.dir={f['pre']}", f"model.init_from={f['init_damaged']}"], 2),
        ("file", "train model.init_from= a fine-tuned classifier (no LM head)",
         train + [f"run_dir={u}/run", f"data.dir={f['pre']}", f"model.init_from={f['ft']}/best"], 2),
        ("file", "train model.init_from= a missing path",
         train + [f"run_dir={u}/run", f"data.dir={f['pre']}", f"model.init_from={u}/nope"], 2),
        ("config", "train train.trainable=[nosuchparam] (matches nothing)",
         train + [f"run_dir={u}/run", f"data.dir={f['pre']}", "train.trainable=[nosuchparam]"], 2),
        ("config", "train train.trainable=[] (nothing to train)",
         train + [f"run_dir={u}/run", f"data.dir={f['pre']}", "train.trainable=[]"], 2),
        ("file", "train data.tokenizer= a missing file",
         train + [f"run_dir={u}/run", f"data.dir={f['pre']}", f"data.tokenizer={u}/nope.model"], 2),
        ("file", "train data.tokenizer= a file that is not a SentencePiece model",
         train + [f"run_dir={u}/run", f"data.dir={f['pre']}", f"data.tokenizer={f['a_file']}"], 2),
        ("config", "train data.tokenizer= another tokenizer than data.dir was preprocessed with",
         train + [f"run_dir={u}/run", f"data.dir={f['pre']}", f"data.tokenizer={f['other_tok']}"], 2),
        ("config", "train data.pack_segments=0", train + [f"run_dir={u}/run", f"data.dir={f['pre']}", "data.pack_segments=0"], 2),
        ("config", "train data.pack=maybe", train + [f"run_dir={u}/run", f"data.dir={f['pre']}", "data.pack=maybe"], 2),
        ("config", "bench --sides torch_eager (without jax)", bench + ["--sides", "torch_eager"], 2),
        ("config", "bench --sides jax,jxa (unknown side)", bench + ["--sides", "jax,jxa"], 2),
        ("config", "bench --sides jax,torch_compile with --torch-compile off",
         bench + ["--sides", "jax,torch_compile", "--torch-compile", "off"], 2),
        ("api", "fill_mask of a text without <mask>", api(f"{nb}\nprint(m.fill_mask('the file is open'))"), 2),
        ("api", "fill_mask(top_k=0)", api(f"{nb}\nprint(m.fill_mask('the <mask> is open', top_k=0))"), 2),
        ("api", "fill_mask of a fine-tuned classifier (no LM head)",
         api(f"m = xlm_jax.load({f['ft']!r})\nprint(m.fill_mask('the <mask> is open'))"), 2),
        ("api", "embed(layer=99) of a 2-layer model", api(f"{nb}\nprint(m.embed(['the file'], layer=99))"), 2),
        ("api", "embed([])", api(f"{nb}\nprint(m.embed([]))"), 2),
        ("api", "embed(pooling='max')", api(f"{nb}\nprint(m.embed(['the file'], pooling='max'))"), 2),
        ("api", "embed([''] ) of an empty text is finite",
         api(f"{nb}\ne = m.embed(['', 'the file'])\nassert np.isfinite(e).all(), e\nprint('finite', e.shape)"), 0),
        ("api", "similarity with a non-str item", api(f"{nb}\nprint(m.similarity(['the file'], [3]))"), 2),
        ("api", "retrieve(k=5) among 2 candidates",
         api(f"{nb}\nprint(m.retrieve(['the file'], ['the cat', 'the page'], k=5))"), 2),
        ("api", "predict of a pretraining checkpoint (no task head)", api(f"{nb}\nprint(m.predict('the file'))"), 2),
        ("api", "predict of a (premise, hypothesis) pair with a single-text classifier",
         api(f"m = xlm_jax.load({f['ft']!r})\nprint(m.predict([('the file', 'the cat')]))"), 2),
        ("api", "predict_tokens of a sequence classifier",
         api(f"m = xlm_jax.load({f['ft']!r})\nprint(m.predict_tokens([['the', 'file']]))"), 2),
        ("api", "xlm_jax.load(tokenizer=) a file that is not a SentencePiece model",
         api(f"m = xlm_jax.load({f['ckpt']!r}, tokenizer={f['a_file']!r})\nprint(m.embed('the file'))"), 2),
        # 8. issue 20's smaller kinds (each exits 2 before any work, naming what was found)
        ("config", "bench --device gpu on a machine without a GPU (refused before any worker)",
         bench + ["--device", "gpu"], 2),
        ("file", "evaluate task: a SQuAD JSON given to a classification checkpoint (names the format)",
         ev + ["task", "--checkpoint", f["ft"], "--tokenizer", f["tok"], "--data", f["squad_train"]], 2),
        ("file", "finetune task=ner on a classification TSV (names the format, not a label)",
         ft[:3] + ["task=ner"] + ft[4:] + [f"out={u}/ft", f"train=[{f['wide_tsv']}]"], 2),
        ("file", "finetune task=qa on a classification TSV (names the format)",
         qa + [f"out={u}/ft", f"train=[{f['wide_tsv']}]"], 2),
        ("config", "train mesh.data=3 on one device (names the devices needed and found, then the batch)",
         train + [f"run_dir={u}/run", f"data.dir={f['pre']}", "mesh.data=3"], 2),
    ]


def snapshot(paths: list[Path]) -> dict[str, str]:
    out = {}
    for root in paths:
        for p in sorted(root.rglob("*")) if root.is_dir() else [root]:
            if p.is_file():
                out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
            elif p.is_dir():
                out[str(p)] = "directory"
    return out


def run(argv: list[str], check: bool = False, env: dict | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
    if check and proc.returncode:
        raise SystemExit(f"fixture command failed: {' '.join(argv)}\n{proc.stderr[-3000:]}")
    return proc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("work")
    parser.add_argument("--out", default=None, help="JSON results (default: WORK/bad_inputs.json)")
    parser.add_argument("--only", default="", help="run only cases whose description contains this")
    args = parser.parse_args()
    w = Path(args.work).resolve()
    env = {**os.environ, "XLM_JAX_CACHE": str(w / "cache"), "PYTHONPATH": str(ROOT)}
    os.environ.update(env)
    fx = build_new_fixtures(w, build_fixtures(w))
    watched = [Path(fx[k]) for k in ("ckpt", "run", "ft", "pre", "corpus", "tok", "a_file")]
    rows, failures = [], 0
    u = user_dir(w)
    for kind, what, argv, expected in cases(fx, str(u)):
        if args.only and args.only not in what:
            continue
        u = user_dir(w)
        before = snapshot(watched + [u])
        t0 = time.perf_counter()
        proc = run(argv, env=env)
        after = snapshot(watched + [u])
        changed = sorted(p for p in before if after.get(p) != before[p])
        if expected == 2:  # a refusal writes nothing at all (a failure mid-run may keep what it saved)
            changed += sorted(f"{p} (new)" for p in after if p not in before)
        lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
        message = lines[-1] if lines else proc.stdout.strip().splitlines()[-1:] or [""]
        message = message if isinstance(message, str) else message[0]
        traceback = "Traceback (most recent call last)" in proc.stderr
        cli = argv[1] == "-m"
        ok = (proc.returncode == expected and not traceback and not changed
              and (expected == 0 or not cli or message.startswith("error:")))
        failures += not ok
        row = dict(kind=kind, case=what, exit=proc.returncode, expected=expected, message=message[:240],
                   traceback=traceback, changed=changed, ok=ok, seconds=round(time.perf_counter() - t0, 1))
        rows.append(row)
        print(f"{'ok ' if ok else 'BAD'} [{kind}] {what}: exit {proc.returncode} (want {expected}) "
              f"{'TRACEBACK ' if traceback else ''}{'CHANGED ' + str(changed) + ' ' if changed else ''}| {message[:160]}",
              flush=True)
    out = Path(args.out) if args.out else w / "bad_inputs.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=1, ensure_ascii=False) + "\n")
    print(f"\n{len(rows) - failures}/{len(rows)} cases handled as the contract says; results in {out}")
    print("\n| kind | input | exit | message |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['kind']} | {r['case']} | {r['exit']} | {r['message'][:150].replace('|', '/')} |")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
