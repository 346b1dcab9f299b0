"""Pretraining's loop: `train` (below, on one screen) sets the run up (`xlm_jax.pretrain.setup`), then runs the
steps; each step: the batch (a pure function of seed and step), the update, then the edges at the steps they are
due: the log interval (`Interval`), the held-out evaluation (`run_eval`), a checkpoint (`checkpoint`), a signal.
The helpers below `train` are those edges and the end-of-run summary (`finish`: the plot and one line).

Exit codes (returned): 0 done (or stopped at train.stop_at); 3 (`EXIT_NON_FINITE`) the loss or parameters became
NaN / inf, nothing saved after the last good checkpoint; 128 + signum after SIGINT / SIGTERM and a checkpoint.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from tqdm import tqdm

from xlm_jax.core import outputs
from xlm_jax.core.errors import NonFiniteError
from xlm_jax.data.batches import BatchSource
from xlm_jax.data.prefetch import Prefetcher
from xlm_jax.pretrain.config import TrainConfig
from xlm_jax.pretrain.setup import Run, fmt_count, log_summary, setup_run
from xlm_jax.training.metrics import MetricsWriter, read_metrics
from xlm_jax.training.plots import plot_run
from xlm_jax.training.saving import QuietOrbaxErrors, check_saves, save_checkpoint, wait_for_saves
from xlm_jax.training.sharding import global_batch
from xlm_jax.training.signals import StopSignals, Stopped
from xlm_jax.training.flops import Work, batch_work, padding_share, peak_flops, throughput
from xlm_jax.training.step import all_finite, first_non_finite, make_eval_step, make_train_step

EXIT_NON_FINITE = 3


def train(cfg: TrainConfig, force: bool = False) -> int:
    """Runs (or resumes) the pretraining described by `cfg`; returns the process exit code (see the module).

    `cfg.run_dir` must be new, empty or an earlier run of train (resumed); another directory, or one that cannot
    be written, is a UserError before any work, unless `force` (train then writes into it, and into the data
    cache's directories, whatever they hold). A failed checkpoint write is a UserError; NaN / inf returns 3."""
    run = setup_run(cfg, force)
    log_summary(run)
    phase = run.phase_plan.index(run.start)  # of the next update (a run resumed at a boundary starts the next phase)
    run.model_cfg = run.phase_plan.model_cfgs[phase]
    train_step, eval_step = make_steps(run, phase)
    writer = MetricsWriter(run.run_dir, resume_step=run.start, enabled=run.lead)
    if run.start >= run.stop_step:
        run.log(f"the run is already at step {run.start} (train.steps={run.steps}, train.stop_at="
                f"{cfg.train.stop_at}): nothing to train; raise train.steps to continue it")
    bar = tqdm(total=run.steps, initial=run.start, desc="train", unit="step", dynamic_ncols=True,
               disable=not (run.lead and cfg.train.progress), file=sys.stderr)
    interval = Interval(run, writer, bar)
    step, exit_code = run.start, 0
    batches = Prefetcher(run.source.batch, run.start, run.stop_step, cfg.train.prefetch)  # batch k+1 while step k runs
    with batches, StopSignals() as stop, QuietOrbaxErrors(run.run_dir) as quiet:
        quiet.closing = (writer.close, run.mngr.close, run.best_mngr.close if run.best_mngr is not None else None)
        try:
            for step in range(run.start + 1, run.stop_step + 1):
                if run.phase_plan.index(step - 1) != phase:  # a new phase: its model configuration (RoPE bases)
                    phase = run.phase_plan.index(step - 1)
                    run.model_cfg = run.phase_plan.model_cfgs[phase]
                    train_step, eval_step = make_steps(run, phase)
                    run.log(f"step {step}: {run.phase_plan.describe()[phase]}")
                host_batch = batches.get(step - 1)
                run.state, metrics = train_step(run.state, global_batch(run.mesh, host_batch), run.key)
                bar.update(1)
                interval.add(step, metrics, host_batch)
                if step % cfg.train.log_every == 0 or step == run.stop_step:
                    interval.write(step, metrics)
                # Evaluation depends on the step alone (never on where a time slice stopped), so that a resumed
                # run's metrics.jsonl equals an uninterrupted one's.
                if (cfg.train.eval_every and step % cfg.train.eval_every == 0) or step == run.steps:
                    run_eval(run, eval_step, writer, step)
                if not run.multi_process:  # (processes would see a failed save at different steps: they wait below)
                    check_saves(run.mngr)  # a failed async save stops the run now, not at the next checkpoint
                if step % cfg.checkpoint.every == 0 or step == run.stop_step:
                    checkpoint(run, step, interval.first_bad)
                if stop.signum is not None:
                    checkpoint(run, step, interval.first_bad)
                    raise Stopped(stop.signum)
            wait_for_saves(run.mngr)
        except NonFiniteError as err:
            bar.close()
            wait_for_saves(run.mngr)
            report_non_finite(run, err)
            exit_code = EXIT_NON_FINITE
        except Stopped as err:
            bar.close()
            wait_for_saves(run.mngr)
            run.log(f"{err.name}: stopped after step {step}; checkpoint {run.ckpt_dir / str(step)} saved. "
                    "Re-run the same command to resume.")
            exit_code = err.exit_code
        except OSError as err:  # metrics.jsonl / tb/ on a full disk
            raise outputs.as_user_error(err, run.run_dir, "could not write the run's files") from err
        finally:
            bar.close()
    if run.lead and exit_code == 0:
        finish(run.run_dir, run.wall_start, run.log)
    return exit_code


def make_steps(run: Run, phase: int):
    """(train step, eval step or None) for the model configuration of `phase` (jitted anew: a phase may change the
    RoPE bases, which are compile-time constants)."""
    model_cfg = run.phase_plan.model_cfgs[phase]
    train_step = make_train_step(model_cfg, run.optimizer, run.mesh, run.shardings, run.data_cfg.objectives,
                                 {o: len(g) for o, g in run.groups.items()}, run.cfg.train.grad_accum,
                                 schedule=run.schedule)
    eval_step = make_eval_step(model_cfg, run.mesh, run.shardings) if run.eval_langs else None
    return train_step, eval_step


# ---- the edges: logging, evaluation, checkpoints ---------------------------------------------------------------


def report_non_finite(run: Run, err: NonFiniteError) -> None:
    """The one error line of a NaN / inf: the step, and the last good checkpoint to resume from."""
    good = [s for s in run.mngr.all_steps() if s < err.step]
    print(f"error: {err}; training stopped. The last good checkpoint is "
          f"{run.ckpt_dir / str(max(good)) if good else 'none'} (nothing later was saved). Lower "
          "optimizer.lr, raise optimizer.warmup_steps or check the data, then re-run to resume from it.",
          file=sys.stderr)


class Interval:
    """The metrics of the steps since the last log: running sums on device (no host sync per step), the first
    non-finite step, the work of the timed steps (counted on this process's host rows, summed over processes at
    the log); `write` turns them into one metrics.jsonl record and the progress bar's figures."""

    def __init__(self, run: Run, writer: MetricsWriter, bar):
        self.run, self.writer, self.bar = run, writer, bar
        self.n_dev = jax.device_count()
        self.peak = peak_flops(jax.devices())
        self.first_bad = jnp.asarray(-1, jnp.int32)
        self._reset()

    def _reset(self) -> None:
        # `work`: the timed steps (throughput); `batches`: every step of the interval (the padding share, which
        # must not depend on where a run was resumed, i.e. on which step was the compilation one).
        self.sums, self.steps, self.work, self.batches = None, 0, Work(), Work()
        self.timer = time.perf_counter()

    def add(self, step: int, metrics: dict, host_batch: dict) -> None:
        if self.sums is None:
            self.sums = jax.tree.map(jnp.zeros_like, metrics)
        self.sums, self.first_bad = accumulate(self.sums, self.first_bad, metrics, jnp.asarray(step, jnp.int32))
        self.steps += 1
        work = batch_work(self.run.model_cfg, host_batch)
        self.work, self.batches = self.work + work, self.batches + work
        if step == self.run.start + 1:
            # Time compilation apart so that the first interval's throughput is the steady state's.
            jax.block_until_ready(metrics["loss"])
            self.run.log(f"first step (compilation) took {time.perf_counter() - self.timer:.1f} s")
            self.work = Work()
            self.timer = time.perf_counter()

    def write(self, step: int, metrics: dict) -> None:
        finite_or_raise(self.first_bad)
        host = jax.device_get(self.sums)
        elapsed = max(time.perf_counter() - self.timer, 1e-9)
        values = summarize_interval(host, self.steps, float(metrics["lr"]), self.run.groups)
        # Throughput of the timed steps (none when the interval held only the compilation step).
        values.update(throughput(_all_processes(self.work), elapsed, self.n_dev, self.peak),
                      padding_share=padding_share(_all_processes(self.batches)),
                      elapsed_s=time.perf_counter() - self.run.wall_start)
        self.writer.write(step, "train", values)
        figures = progress_figures(values, self.n_dev)
        self.bar.set_postfix(figures)
        if not self.run.cfg.train.progress:  # no bar to carry the figures: the interval's line goes to the log
            self.run.log(f"step {step}/{self.run.steps}: " + ", ".join(f"{k} {v}" for k, v in figures.items())
                         + f", lr {values['lr']:.3g}")
        self._reset()


def progress_figures(values: dict, n_devices: int) -> dict[str, str]:
    """The progress bar's figures from a train record: loss, slot tokens/s (all and per device), real (non-pad)
    tokens/s and the padding share of the slots."""
    tps = values.get("tokens_per_s") or 0.0
    figures = {"loss": f"{values['loss']:.3f}", "tok_s": fmt_count(tps), "tok_s_dev": fmt_count(tps / n_devices),
               "real_tok_s": fmt_count(values.get("real_tokens_per_s") or 0.0)}
    if values.get("padding_share") is not None:
        figures["pad"] = f"{values['padding_share']:.0%}"
    return figures


def finite_or_raise(first_bad) -> None:
    """NonFiniteError naming the first step whose loss or gradient norm was NaN / inf (`first_bad` >= 0)."""
    first = int(jax.device_get(first_bad))
    if first >= 0:
        raise NonFiniteError(first, "the loss or gradient norm is NaN / inf")


def checkpoint(run: Run, step: int, first_bad) -> None:
    """Saves step (async) unless it is saved already; never a state after a NaN / inf (NonFiniteError)."""
    finite_or_raise(first_bad)
    if not bool(all_finite(run.state["params"])):
        raise NonFiniteError(step, "the parameters contain NaN / inf")
    if step not in run.mngr.all_steps():
        save_checkpoint(run.mngr, step, run.state, run.model_cfg, run.train_meta(step))


def run_eval(run: Run, eval_step, writer: MetricsWriter, step: int) -> None:
    """The held-out MLM evaluation: a "valid" record, and with checkpoint.keep_best the best parameters saved."""
    if eval_step is None:
        return
    values = evaluate(eval_step, run.state["params"], run.source, run.eval_langs, run.mesh, run.cfg.train.batch_size,
                      run.cfg.train.eval_batches)
    if not values:
        return
    writer.write(step, "valid", values)
    run.log(f"step {step}: valid loss {values['loss']:.3f} (ppl {values['ppl']:.1f}) over {len(run.eval_langs)} "
            "languages")
    meta = run.meta
    if run.best_mngr is not None and math.isfinite(values["loss"]) and (
            meta["best_valid_loss"] is None or values["loss"] < meta["best_valid_loss"]):
        meta.update(best_valid_loss=values["loss"], best_step=step)
        save_checkpoint(run.best_mngr, step, run.state, run.model_cfg, run.train_meta(step), with_opt=False)


def finish(run_dir: Path, wall_start: float, log) -> None:
    records = [r for r in read_metrics(run_dir) if r.get("kind") == "train" and r.get("loss") is not None]
    try:
        png = plot_run(run_dir)
        log(f"plot: {png}")
    except Exception as err:  # noqa: BLE001 - a plot must never fail a finished run
        log(f"(could not draw the plot: {err})")
    if records:
        first, last = records[0], records[-1]
        tps = [r["tokens_per_s"] for r in records if r.get("tokens_per_s")]
        loss = (f"{first['loss']:.3f} (step {first['step']})" if first is last else
                f"{first['loss']:.3f} (step {first['step']}) -> {last['loss']:.3f} (step {last['step']})")
        log(f"loss: {loss}; "
            f"median throughput {fmt_count(float(np.median(tps))) if tps else 'not measured'} tokens/s; "
            f"wall time {time.perf_counter() - wall_start:.0f} s; run dir {run_dir}")


def _all_processes(work):
    """`work` (a `step.Work` counted on this process's rows) summed over all processes: every process calls it
    at the same log steps. The sums travel as float32 (x64 is off): counts are exact below 2**24 per interval,
    beyond that rounded by at most 6e-8 relative, far below the timing noise."""
    if jax.process_count() == 1:
        return work
    gathered = multihost_utils.process_allgather(np.asarray(dataclasses.astuple(work), np.float32))
    return Work(*(float(x) for x in np.asarray(gathered).reshape(jax.process_count(), -1).sum(0)))


# ---- metrics ---------------------------------------------------------------------------------------------------


@jax.jit
def accumulate(sums: dict, first_bad: jax.Array, metrics: dict, step: jax.Array):
    """Running sums of the step metrics on device (no host sync per step) and the first step whose loss or
    gradient norm was not finite (-1 if none)."""
    return jax.tree.map(jnp.add, sums, metrics), first_non_finite(first_bad, metrics, step)


def summarize_interval(sums: dict, n_steps: int, last_lr: float, groups: dict[str, list[str]]) -> dict:
    out = {"loss": float(sums["loss"]) / n_steps, "lr": last_lr, "grad_norm": float(sums["grad_norm"]) / n_steps}
    for obj, names in groups.items():
        count = max(float(sums[f"{obj}/tokens"]), 1.0)
        out[f"{obj}/loss"] = float(sums[f"{obj}/loss"]) / n_steps
        out[f"{obj}/accuracy"] = float(sums[f"{obj}/accuracy"]) / n_steps
        out[f"{obj}/predicted_tokens"] = count / n_steps
        gl, gc = np.asarray(sums[f"{obj}/group_loss_sum"]), np.asarray(sums[f"{obj}/group_count"])
        for i, name in enumerate(names):
            if gc[i] > 0:
                out[f"{obj}/loss/{name}"] = float(gl[i] / gc[i])
    return out


def evaluate(eval_step, params, source: BatchSource, langs: list[str], mesh, batch_size: int,
             max_batches: int) -> dict[str, float]:
    """MLM loss, accuracy and perplexity per held-out language; `valid/loss` is the mean over languages."""
    out, losses = {}, []
    for lang in langs:
        totals = None
        for i, batch in enumerate(source.valid_batches(lang, split="valid", batch_size=batch_size)):
            if max_batches and i >= max_batches:
                break
            sums = eval_step(params, global_batch(mesh, batch))
            totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
        if totals is None:
            continue
        totals = jax.device_get(totals)
        count = max(float(totals["count"]), 1.0)
        loss = float(totals["loss_sum"]) / count
        out[f"loss/{lang}"] = loss
        out[f"ppl/{lang}"] = math.exp(min(loss, 50.0))
        out[f"accuracy/{lang}"] = float(totals["correct"]) / count
        losses.append(loss)
    if losses:
        out["loss"] = float(np.mean(losses))
        out["ppl"] = math.exp(min(out["loss"], 50.0))
    return out
