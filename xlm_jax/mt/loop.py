"""MT training (`python -m xlm_jax.train_mt`): supervised MT, denoising auto-encoding and online back-translation
of an `EncoderDecoder`, XLM's way (facebookresearch/XLM `train.py` with `--mt_steps --ae_steps --bt_steps`).

One iteration k runs one update per objective in XLM's order — AE per language, MT per direction, BT per
direction — each its own forward / backward / clip / Adam update (XLM `Trainer.optimize` per step), skipped
when its lambda is 0 at k. The lambda multiplies that update's loss (XLM `loss = lambda * loss`): under Adam a
constant factor mostly cancels, so a lambda acts as an on/off switch and, through gradient clipping and Adam's
epsilon, a mild scale; it does not trade objectives off against each other as a summed loss would. The
learning-rate schedule counts updates (`train.steps x updates per iteration`), as XLM's optimizer does.

Back-translation at iteration k: a monolingual L1 batch, translated to L2 by the current parameters (greedy,
dropout off, max length int(1.3 * width + 5), a separate jitted call outside the gradient, on stop_gradient'ed
parameters), then one update reconstructing the L1 batch from the generated L2 text.

Exactness of resume: the batch of every update is a pure function of (seed, stream, k) (`xlm_jax.mt.data`),
noise draws from `default_rng([seed, stream, k])`, dropout keys from `fold_in(fold_in(key(seed), k), stream)`
(then the update count), and the back-translation of iteration k from the parameters at that point; a
checkpoint is taken between iterations and records the update count. Everything `train` guarantees holds:
sharded steps on the mesh, NaN / inf -> exit 3 with nothing saved after the last good checkpoint, SIGINT /
SIGTERM -> a checkpoint then exit 128 + signum, a run directory with its marker (re-run to resume), the
tokenizer copied into it, metrics.jsonl + TensorBoard, and validation BLEU / chrF++ (`xlm_jax.tasks.mt_metrics`)
picking RUN_DIR/best, as XLM selects on validation BLEU.

RUN_DIR: config.yaml, tokenizer.model (or tokenizer.json), metrics.jsonl, tb/, checkpoints/<k>/ (params,
model_config, opt_state, train_meta), best/<k>/ (params, model_config): `checkpoint.restore_params` gives
(params {"encoder", "decoder"}, EncoderDecoderConfig).
"""

from __future__ import annotations

import dataclasses
import math
import shutil
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import yaml
from tqdm import tqdm

from xlm_jax.core import outputs
from xlm_jax.core.errors import NonFiniteError, UserError
from xlm_jax.data.tokenizer import check_tokenizer_fits
from xlm_jax.models.config import EncoderDecoderConfig, any_config_to_dict, encoder_decoder_config, get_model_config
from xlm_jax.models.decoder import EncoderDecoder, init_from_mlm, init_params
from xlm_jax.models.decoding import start_token
from xlm_jax.mt import data as mtdata
from xlm_jax.mt.config import MTConfig
from xlm_jax.tasks.mt_metrics import mt_report
from xlm_jax.training import checkpoint as ckpt_lib
from xlm_jax.training.metrics import MetricsWriter
from xlm_jax.training.optim import make_optimizer
from xlm_jax.training.saving import QuietOrbaxErrors, restore_state, save_checkpoint, verify_resume, wait_for_saves
from xlm_jax.training.seq2seq import back_translate, bt_max_len, mt_state_shardings, place_state, seq2seq_loss
from xlm_jax.training.settings import to_dict
from xlm_jax.training.sharding import batch_size_multiple, global_batch, make_mesh
from xlm_jax.training.signals import Stopped, StopSignals
from xlm_jax.training.step import all_finite, first_non_finite, make_step
from xlm_jax.workflows.convert import load_any

COMMAND = "train_mt"
EXIT_NON_FINITE = 3
INIT_STREAM = 0x7FFFFFFF
VALID_ROWS = 32  # validation translates in batches of this many rows (padded), one compiled shape per width


@dataclasses.dataclass
class Setup:
    cfg: MTConfig
    run_dir: Path
    tok: object
    model_cfg: EncoderDecoderConfig
    lang_ids: dict[str, int]
    sentences: dict  # lang -> list of piece arrays (monolingual); (l1, l2) -> (l1 pieces, l2 pieces)
    batches: dict  # (kind, langs) -> TokenBatches
    valid: tuple[list[str], list[str]] | None
    init_params: object  # params to start from (None: random init inside the mesh)
    log: object
    mesh_rows: int = 1  # every batch's rows are a multiple of this (the mesh's data x fsdp)


def _langs_of(model_cfg) -> list[str]:
    return list(model_cfg.langs)


def prepare(cfg: MTConfig, force: bool, log) -> Setup:
    """Every check that can be made before work: the run directory, the objectives' languages against the model,
    the corpus (sides line-aligned), the tokenizer against the model, the initial checkpoint (read now, so a
    misfit is refused with nothing written)."""
    run_dir = outputs.check_dir(cfg.run_dir, COMMAND, force=force)
    langs = cfg.objectives.langs()
    mlm_params, mlm_cfg, given_tok = None, None, None
    if cfg.model.init != "random":
        mlm_params, mlm_cfg, info = load_any(cfg.model.init_from)
        if "lm_head" not in mlm_params and cfg.model.init == "mlm":
            raise UserError(f"model.init_from={cfg.model.init_from}: no LM head in the checkpoint, so the decoder "
                            "cannot take it (its output layer); use model.init=encoder")
        given_tok = next((str(Path(cfg.model.init_from) / f) for f in info.tokenizer_files
                          if (Path(cfg.model.init_from) / f).is_file()), None)
        mlm_cfg = _check_mlm(cfg, mlm_cfg, langs)
    root = mtdata.corpus_dir(cfg.data, log, force)
    asked_by = ", ".join(f"objectives.{k}=[{', '.join(getattr(cfg.objectives, k))}]" for k in ("mt", "ae", "bt")
                         if getattr(cfg.objectives, k))
    text = mtdata.read_text_data(root, langs, cfg.data.valid_fraction, cfg.data.max_pairs, asked_by)
    tok = mtdata.mt_tokenizer(cfg.data, root, langs, given_tok, log, force)

    if mlm_cfg is None:
        base = get_model_config(cfg.model.base)
        over = dict(vocab_size=len(tok), langs=tuple(langs), n_langs=len(langs),
                    use_lang_emb=base.family == "xlm", max_positions=max(base.max_positions,
                                                                          bt_max_len(cfg.data.max_len) + 2))
        for name in ("bos", "pad", "eos", "unk"):
            if getattr(tok, f"{name}_id") is not None:
                over[f"{name}_token_id"] = int(getattr(tok, f"{name}_id"))
        if tok.mask_id is not None:
            over["mask_token_id"] = int(tok.mask_id)
        enc = base.replace(**over)
    else:
        enc = mlm_cfg
        check_tokenizer_fits(tok, enc.vocab_size, f"model.init_from={cfg.model.init_from}", bos_id=enc.bos_token_id,
                             pad_id=enc.pad_token_id, eos_id=enc.eos_token_id, unk_id=enc.unk_token_id)
    missing = [lang for lang in langs if lang not in _langs_of(enc)]
    if missing:
        raise UserError(f"objectives name {missing}, which the model lacks (its languages: {list(enc.langs)}); "
                        "use the model's languages or another checkpoint")
    if cfg.model.dropout != -1.0:
        enc = enc.replace(dropout=cfg.model.dropout, attention_dropout=cfg.model.dropout)
    model_cfg = encoder_decoder_config(enc, cfg.model.decoder_layers or None)
    if bt_max_len(mtdata.bucket(cfg.data.max_len, cfg.data.width_bucket)) > model_cfg.decoder.max_positions:
        raise UserError(f"data.max_len={cfg.data.max_len}: back-translation writes up to int(1.3 x width + 5) "
                        f"tokens, more than the decoder's {model_cfg.decoder.max_positions} positions; lower it")
    lang_ids = {lang: i for i, lang in enumerate(enc.langs)}
    for kind, pair in [("mt", d.split("-")) for d in cfg.objectives.mt] + [("bt", d.split("-")[:2]) for d in
                                                                             cfg.objectives.bt]:
        if tuple(sorted(pair)) not in text.train and kind == "mt":
            raise UserError(f"objectives.mt={'-'.join(pair)}: corpus {root} has no pairs {'-'.join(sorted(pair))}")

    init = None
    if mlm_params is not None:
        fresh = init_params(EncoderDecoder(model_cfg), jax.random.fold_in(jax.random.key(cfg.seed), INIT_STREAM))
        init = init_from_mlm(mlm_params, fresh, decoder=cfg.model.init == "mlm")

    mesh_rows = _rows_multiple(cfg)
    sentences, batches = _batches(cfg, text, tok, mesh_rows)
    vd = cfg.valid_direction
    valid = None
    if vd and cfg.data.valid_sentences:
        s, t = vd.split("-")
        key = tuple(sorted((s, t)))
        if key in text.valid and text.valid[key][0]:
            a, b = text.valid[key]
            src, tgt = (a, b) if key[0] == s else (b, a)
            valid = (src[: cfg.data.valid_sentences], tgt[: cfg.data.valid_sentences])
        else:
            log(f"note: no validation pairs {s}-{t} in {root}: no BLEU, no best checkpoint")
    return Setup(cfg, run_dir, tok, model_cfg, lang_ids, sentences, batches, valid, init, log, mesh_rows)


def _batches(cfg: MTConfig, text: mtdata.TextData, tok, mesh_rows: int):
    """The tokenized sentences and the TokenBatches of every update kind (rows a multiple of `mesh_rows`)."""
    max_pieces = cfg.data.max_len - 2
    sentences, batches = {}, {}
    encoded = {}
    for key, (a, b) in text.train.items():
        ea, eb = mtdata.encode(tok, a), mtdata.encode(tok, b)
        keep = [i for i in range(len(ea)) if len(ea[i]) <= max_pieces and len(eb[i]) <= max_pieces]
        encoded[key] = ([ea[i] for i in keep], [eb[i] for i in keep])

    def mono(lang: str) -> list[np.ndarray]:
        out = []
        for key, (ea, eb) in sorted(encoded.items()):
            if lang in key:
                side = ea if key[0] == lang else eb
                start = (0 if key[0] == lang else 1) if cfg.data.mono_split else 0
                out += side[start::2] if cfg.data.mono_split else side
        if not out:
            raise UserError(f"no {lang} sentences in the corpus for denoising / back-translation")
        return out

    for kind, langs in cfg.objectives.updates():
        stream = mtdata.stream_id(kind, langs)
        if kind == "mt":
            key = tuple(sorted(langs))
            ea, eb = encoded[key]
            sentences[key] = (ea, eb)
            widths = np.array([max(len(x), len(y)) + 2 for x, y in zip(ea, eb)])
        else:
            lang = langs[0]
            sentences.setdefault(lang, mono(lang))
            widths = np.array([len(x) + 2 for x in sentences[lang]])
        batches[(kind, langs)] = mtdata.TokenBatches.build(widths, cfg.data.tokens_per_batch, cfg.data.width_bucket,
                                                           mesh_rows, cfg.seed, stream)
    return sentences, batches


def _check_mlm(cfg: MTConfig, enc, langs: list[str]):
    """The MLM's family, language embeddings and languages against the objectives (before any data is read)."""
    where = f"model.init_from={cfg.model.init_from}"
    if enc.family not in ("xlm", "xlmr"):
        raise UserError(f"{where}: family {enc.family!r} has no decoder here (XLM and XLM-R families only)")
    if enc.family == "xlm" and not enc.has_lang_embeddings:
        raise UserError(f"{where}: an XLM-family checkpoint without language embeddings (use_lang_emb="
                        f"{enc.use_lang_emb}, n_langs={enc.n_langs}): XLM's decoder learns which language to write "
                        "only from them; start from an MLM trained with language embeddings (e.g. "
                        "xlm_mlm_tlm_xnli15_1024), or use an XLM-R-family checkpoint")
    if enc.family != "xlm" and not enc.langs:  # XLM-R has no language table: the data's languages name the rows
        enc = enc.replace(langs=tuple(langs), n_langs=len(langs))
    missing = [lang for lang in langs if lang not in enc.langs]
    if missing:
        raise UserError(f"objectives name {missing}, which the model lacks (its languages: {list(enc.langs)}); "
                        "use the model's languages or another checkpoint")
    return enc


def _rows_multiple(cfg: MTConfig) -> int:
    """The rows of every batch are a multiple of the mesh's data x fsdp (not of train.grad_accum: which sentences
    make up a batch must not depend on how its update is split; `_accum_rows` pads for the micro-batches)."""
    return batch_size_multiple(make_mesh(cfg.mesh))


def _accum_rows(idx: np.ndarray, grad_accum: int, mesh_rows: int) -> np.ndarray:
    """`idx` padded with padding rows (-1: masks 0, they predict and count nothing) to a multiple of mesh_rows x
    grad_accum, so that `make_step` can split it into grad_accum micro-batches: the update is that of the batch
    itself (the loss is normalised by the whole batch's target tokens)."""
    multiple = mesh_rows * grad_accum
    return np.concatenate([idx, -np.ones(-len(idx) % multiple, idx.dtype)])


# ------------------------------------------------------------------------------------------ the run


def train_mt(cfg: MTConfig, force: bool = False) -> int:
    """Runs (or resumes) the MT training `cfg` describes; returns the exit code (0, 3 for NaN / inf, 128 + signum).
    Bad input is a UserError before anything is written (see `prepare`)."""
    wall = time.perf_counter()

    def log(msg: str) -> None:
        tqdm.write(msg, file=sys.stdout)

    s = prepare(cfg, force, log)
    mcfg, tok = s.model_cfg, s.tok
    model = EncoderDecoder(mcfg)
    mesh = make_mesh(cfg.mesh)
    optimizer = make_optimizer(cfg.optimizer, cfg.total_updates)
    abstract, shardings = mt_state_shardings(mcfg, optimizer, mesh)
    train_step = make_step(seq2seq_loss(model), optimizer, mesh, shardings, grad_accum=cfg.train.grad_accum)
    key = jax.random.key(cfg.seed)

    run_dir = outputs.claim_dir(cfg.run_dir, COMMAND, force=force)
    ckpt_dir = run_dir / "checkpoints"
    mngr = ckpt_lib.manager(ckpt_dir, max_to_keep=cfg.checkpoint.keep)
    best_mngr = ckpt_lib.manager(run_dir / "best", max_to_keep=1) if cfg.checkpoint.keep_best and s.valid else None
    start = mngr.latest_step() or 0
    meta = {"updates": 0, "best_metric": None, "best_step": None}
    if start:
        verify_resume(mngr, ckpt_dir, start)
        saved = ckpt_lib.load_model_config(ckpt_dir / str(start))
        if any_config_to_dict(saved) != any_config_to_dict(mcfg):
            raise UserError(f"cannot resume {ckpt_dir / str(start)}: it holds another model than the config "
                            "describes; use another run_dir")
        state, saved_meta = restore_state(mngr, start, abstract, shardings)
        meta.update({k: saved_meta.get(k) for k in meta})
        state["step"] = jax.device_put(jnp.asarray(meta["updates"], jnp.int32), shardings["step"])
        log(f"resuming from iteration {start} ({ckpt_dir / str(start)})")
    else:
        params = s.init_params
        if params is None:
            params = init_params(model, jax.random.fold_in(key, INIT_STREAM))
        state = place_state(params, optimizer, shardings, mesh)
    _write_run_files(s, run_dir, start)
    writer = MetricsWriter(run_dir, resume_step=start)
    stop_step = cfg.train.stop_at or cfg.train.steps
    log(f"model: encoder {mcfg.encoder.num_layers} + decoder {mcfg.decoder.num_layers} layers, hidden "
        f"{mcfg.encoder.hidden_size}, vocab {mcfg.encoder.vocab_size}; init {cfg.model.init}; updates per "
        f"iteration: {', '.join(_name(k, l) for k, l in cfg.objectives.updates())}; iterations {start}->{stop_step}")
    if start >= stop_step:  # as `train` says it
        log(f"the run is already at iteration {start} (train.steps={cfg.train.steps}, train.stop_at="
            f"{cfg.train.stop_at}): nothing to train; raise train.steps to continue it")
    updates_before = meta["updates"]

    schedules = {kind: cfg.objectives.schedule(kind) for kind in ("mt", "ae", "bt")}
    first_bad = jnp.asarray(-1, jnp.int32)
    interval: dict[str, list] = {}
    exit_code, k = 0, start
    bar = tqdm(total=cfg.train.steps, initial=start, desc="train_mt", unit="it", disable=not cfg.train.progress,
               file=sys.stderr, dynamic_ncols=True)
    with StopSignals() as stop, QuietOrbaxErrors(run_dir) as quiet:
        quiet.closing = (writer.close, mngr.close, best_mngr.close if best_mngr is not None else None)
        try:
            for k in range(start + 1, stop_step + 1):
                for kind, langs in cfg.objectives.updates():
                    lam = schedules[kind](k)
                    if lam <= 0:
                        continue
                    batch = build_update(s, model, state["params"], kind, langs, k, lam)
                    rng = jax.random.fold_in(jax.random.fold_in(key, k), mtdata.stream_id(kind, langs) & 0x7FFFFFFF)
                    state, metrics = train_step(state, global_batch(mesh, batch), rng)
                    meta["updates"] += 1
                    first_bad = first_non_finite(first_bad, metrics, jnp.asarray(k, jnp.int32))
                    interval.setdefault(_name(kind, langs), []).append(metrics)
                bar.update(1)
                if k % cfg.train.log_every == 0 or k == stop_step:
                    _finite_or_raise(first_bad)
                    values = _summarize(interval)
                    interval = {}
                    values["elapsed_s"] = time.perf_counter() - wall
                    writer.write(k, "train", values)
                    bar.set_postfix({n: f"{v:.3f}" for n, v in values.items() if n.endswith("/loss")})
                    if not cfg.train.progress:
                        log(f"iteration {k}: " + ", ".join(f"{n} {v:.3f}" for n, v in values.items()
                                                           if n.endswith("/loss")))
                if s.valid and ((cfg.train.eval_every and k % cfg.train.eval_every == 0) or k == cfg.train.steps):
                    _finite_or_raise(first_bad, state, k)  # no validation record, no best/, after a NaN / inf
                    _validate(s, model, state, writer, k, meta, best_mngr)
                if k % cfg.checkpoint.every == 0 or k == stop_step or stop.signum is not None:
                    _checkpoint(mngr, k, state, mcfg, meta, cfg, first_bad)
                if stop.signum is not None:
                    raise Stopped(stop.signum)
            wait_for_saves(mngr)
        except NonFiniteError as err:
            bar.close()
            wait_for_saves(mngr)
            good = [x for x in mngr.all_steps() if x < err.step]
            print(f"error: {err}; training stopped. The last good checkpoint is "
                  f"{ckpt_dir / str(max(good)) if good else 'none'} (nothing later was saved). Lower optimizer.lr "
                  "or check the data, then re-run to resume from it.", file=sys.stderr)
            exit_code = EXIT_NON_FINITE
        except Stopped as err:
            bar.close()
            wait_for_saves(mngr)
            log(f"{err.name}: stopped after iteration {k}; checkpoint {ckpt_dir / str(k)} saved. Re-run the same "
                "command to resume.")
            exit_code = err.exit_code
        except OSError as err:
            raise outputs.as_user_error(err, run_dir, "could not write the run's files") from err
        finally:
            bar.close()
            writer.close()
            mngr.close()
            if best_mngr is not None:
                best_mngr.close()
    if exit_code == 0 and k > start:
        log(f"done: iterations {start + 1}-{k}, {meta['updates'] - updates_before} updates in "
            f"{time.perf_counter() - wall:.0f} s; best {cfg.train.metric} {meta['best_metric']} at iteration "
            f"{meta['best_step']}; run dir {run_dir}")
    return exit_code


def _name(kind: str, langs: tuple[str, ...]) -> str:
    return f"{kind}_{'-'.join(langs)}"


def build_update(s: Setup, model: EncoderDecoder, params, kind: str, langs: tuple[str, ...], k: int,
                 lam: float) -> dict:
    """The host batch of update (kind, langs) at iteration k (a pure function of seed, k and — for back-
    translation — `params`, the parameters at that point)."""
    cfg, mcfg = s.cfg, s.model_cfg.encoder
    start, eos, pad = start_token(mcfg), mcfg.eos_token_id, mcfg.pad_token_id
    stream = mtdata.stream_id(kind, langs)
    width, idx = s.batches[(kind, langs)].at(k)
    idx = _accum_rows(idx, cfg.train.grad_accum, s.mesh_rows)
    if kind == "mt":
        src_lang, tgt_lang = langs
        key = tuple(sorted(langs))
        a, b = s.sentences[key]
        src_s, tgt_s = (a, b) if key[0] == src_lang else (b, a)
        src, src_mask = mtdata.pad_rows(src_s, idx, width, start, eos, pad)
        tgt, tgt_mask = mtdata.pad_rows(tgt_s, idx, width, start, eos, pad)
        return mtdata.update_batch(src, src_mask, s.lang_ids[src_lang], tgt, tgt_mask, s.lang_ids[tgt_lang], lam)
    lang = langs[0]
    clean, clean_mask = mtdata.pad_rows(s.sentences[lang], idx, width, start, eos, pad)
    if kind == "ae":
        rng = np.random.default_rng([cfg.seed, stream, k])
        src, src_mask = mtdata.noisy(clean, clean_mask, cfg.objectives.noise, pad, mcfg.mask_id, rng)
        return mtdata.update_batch(src, src_mask, s.lang_ids[lang], clean, clean_mask, s.lang_ids[lang], lam)
    other = langs[1]  # back-translation L1 -> L2 (generated, no gradient) -> L1
    max_len = min(bt_max_len(width), s.model_cfg.decoder.max_positions)
    gen, gen_mask = back_translate(model, params, jnp.asarray(clean), jnp.asarray(clean_mask),
                                   jnp.full(clean.shape, s.lang_ids[lang], jnp.int32), s.lang_ids[other], max_len)
    gen, gen_mask = np.asarray(jax.device_get(gen)), np.asarray(jax.device_get(gen_mask))
    return mtdata.update_batch(gen, gen_mask, s.lang_ids[other], clean, clean_mask, s.lang_ids[lang], lam)


def _summarize(interval: dict[str, list]) -> dict:
    out = {}
    losses = []
    for name, ms in interval.items():
        host = jax.device_get(ms)
        for field in ("loss", "nll", "accuracy"):
            out[f"{name}/{field}"] = float(np.mean([m[field] for m in host]))
        out[f"{name}/grad_norm"] = float(np.mean([m["grad_norm"] for m in host]))
        losses.append(out[f"{name}/nll"])
        out["lr"] = float(host[-1]["lr"])
    if losses:
        out["loss"] = float(np.mean(losses))
    return out


def _finite_or_raise(first_bad, state: dict | None = None, k: int = 0) -> None:
    """NonFiniteError for the first iteration whose loss or gradient norm was NaN / inf (`first_bad` >= 0), or,
    given `state`, for parameters holding NaN / inf at iteration k."""
    first = int(jax.device_get(first_bad))
    if first >= 0:
        raise NonFiniteError(first, "the loss or gradient norm is NaN / inf")
    if state is not None and not bool(all_finite(state["params"])):
        raise NonFiniteError(k, "the parameters contain NaN / inf")


def _checkpoint(mngr, k: int, state, mcfg, meta, cfg: MTConfig, first_bad) -> None:
    _finite_or_raise(first_bad, state, k)
    if k not in mngr.all_steps():
        save_checkpoint(mngr, k, state, mcfg, {"step": k, "seed": cfg.seed, **meta})


def translate_texts(s: Setup, model: EncoderDecoder, params, texts: list[str], src_lang: str, tgt_lang: str,
                    max_len: int = 0) -> list[str]:
    """Greedy translations of `texts` (validation): batches of VALID_ROWS rows grouped by bucketed width."""
    mcfg = s.model_cfg.encoder
    start, eos, pad = start_token(mcfg), mcfg.eos_token_id, mcfg.pad_token_id
    pieces = mtdata.encode(s.tok, texts)
    limit = min(s.cfg.data.max_len, mcfg.max_positions)
    widths = [mtdata.bucket(min(len(p), limit - 2) + 2, s.cfg.data.width_bucket) for p in pieces]
    out = [""] * len(texts)
    for w in sorted(set(widths)):
        idx = [i for i, x in enumerate(widths) if x == w]
        for b in range(0, len(idx), VALID_ROWS):
            chunk = np.array(idx[b:b + VALID_ROWS] + [-1] * (VALID_ROWS - len(idx[b:b + VALID_ROWS])))
            ids, mask = mtdata.pad_rows(pieces, chunk, w, start, eos, pad)
            mask[chunk < 0, :2] = 1  # padding rows: a two-token dummy source (never read back)
            n = min(max_len or bt_max_len(w), s.model_cfg.decoder.max_positions)
            gen, gmask = back_translate(model, params, jnp.asarray(ids), jnp.asarray(mask),
                                        jnp.full(ids.shape, s.lang_ids[src_lang], jnp.int32), s.lang_ids[tgt_lang], n)
            gen, gmask = np.asarray(gen), np.asarray(gmask)
            for r, i in enumerate(chunk):
                if i >= 0:
                    row = [int(t) for t, m in zip(gen[r], gmask[r]) if m][1:]
                    out[i] = s.tok.decode([t for t in row if t not in (eos, pad, start)])
    return out


def _validate(s: Setup, model, state, writer, k: int, meta: dict, best_mngr) -> None:
    src_lang, tgt_lang = s.cfg.valid_direction.split("-")
    src, ref = s.valid
    hyps = translate_texts(s, model, state["params"], src, src_lang, tgt_lang, s.cfg.train.valid_max_len)
    report = mt_report(hyps, ref, src, tgt_lang=tgt_lang)
    model_row, copy_row = report["rows"][0], report["rows"][1]
    values = {m: model_row[m] for m in ("bleu", "chrf++", "bleu_tok")}
    values |= {f"copy/{m}": copy_row[m] for m in ("bleu", "chrf++", "bleu_tok")}
    values |= {"direction": s.cfg.valid_direction, "sentences": report["sentences"],
               "signature": report["signatures"]["bleu"]}
    writer.write(k, "valid", values)
    s.log(f"iteration {k}: valid {s.cfg.valid_direction} BLEU {values['bleu']:.2f} chrF++ {values['chrf++']:.2f} "
          f"(copy source: {values['copy/bleu']:.2f} / {values['copy/chrf++']:.2f})")
    metric = values[s.cfg.train.metric]
    if best_mngr is not None and math.isfinite(metric) and (meta["best_metric"] is None or metric > meta["best_metric"]):
        meta.update(best_metric=metric, best_step=k)
        save_checkpoint(best_mngr, k, state, s.model_cfg, {"step": k, "seed": s.cfg.seed, **meta}, with_opt=False)
        wait_for_saves(best_mngr)


def _write_run_files(s: Setup, run_dir: Path, start: int) -> None:
    """config.yaml (the model itself is in every checkpoint's model_config) and the tokenizer copy, so that RUN_DIR is self-contained."""
    doc = yaml.safe_load(yaml.safe_dump(to_dict(s.cfg), sort_keys=False))
    outputs.atomic_write_text(run_dir / "config.yaml", f"# resolved config; re-run: python -m xlm_jax.train_mt "
                              f"{run_dir / 'config.yaml'}\n" + yaml.safe_dump(doc, sort_keys=False, width=120))
    src = Path(s.tok.path)
    dst = run_dir / ("tokenizer.json" if src.suffix == ".json" else "tokenizer.model")
    if src.is_file() and (not start or not dst.is_file()):
        shutil.copyfile(src, dst)
    outputs.write_json(run_dir / "tokenizer_record.json", {"sha256": s.tok.sha256, "path": str(src)})
