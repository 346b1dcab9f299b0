"""Tries bad inputs of every kind on the command-line tools and the Python API, as a new user would, and writes
the table of docs/reliability.md.

    python experiments/bad_inputs.py WORK_DIR [--out docs/results/bad_inputs.json] [--only SUBSTRING]

Builds tiny fixtures in WORK_DIR (a SentencePiece model, a random `xlmr_tiny` checkpoint, a small corpus, its
preprocessed arrays, a 4-step pretraining run, a fine-tuned classifier and a folder of the user's own files), then
runs each case in a fresh process and records its exit code, the last line of stderr, whether a traceback was
printed, and whether any file that existed before the case was changed or removed (by SHA-256). API cases run a
short Python snippet that prints `UserError: <message>` (or the exception's type) and exits 2 on a refusal.

A case passes when it exits with the expected code, prints no traceback, its message is one `error:` line (CLI)
and no pre-existing file changed. The script exits 1 if any case fails.
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
from xlm_jax.errors import UserError
from xlm_jax.tokenizer import Tokenizer
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
    from xlm_jax.tokenizer import train_tokenizer

    train_tokenizer([str(corpus)], 50, str(other_tok / "o.model"))  # another vocabulary
    f["other_tok"] = str(other_tok / "o.model")
    f["pre_other"] = str(w / "pre_other_tok")
    run([PY, "-m", "xlm_jax.preprocess", str(corpus), "--tokenizer", f["other_tok"], "--out", f["pre_other"],
         "--valid-fraction", "0.1", "--workers", "1"], check=True)
    f["a_file"] = str(w / "a_file.txt")
    Path(f["a_file"]).write_text("I am a file, not a directory\n")
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
    ]


def snapshot(paths: list[Path]) -> dict[str, str]:
    out = {}
    for root in paths:
        for p in sorted(root.rglob("*")) if root.is_dir() else [root]:
            if p.is_file():
                out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
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
    fx = build_fixtures(w)
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
