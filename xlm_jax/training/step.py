"""The sharded train and eval steps: pure functions, jitted once with explicit shardings.

`make_step(loss, ...)` is the one train-step factory: pretraining (`make_train_step` = `make_step` with
`objectives_loss`) and fine-tuning (`xlm_jax.finetune.task_loss`) differ only in the `StepLoss` they pass;
gradient accumulation, the optimizer update (clipping and learning-rate scales are optax transforms), the lr /
grad_norm metrics and the batch checks live in the factory, NaN / inf detection in `first_non_finite` /
`all_finite`.

State is a plain dict `{"params", "opt_state", "step"}` of float32 parameters and optimizer state (compute runs
in `ModelConfig.dtype`; losses are float32), laid out on the mesh by `xlm_jax.training.sharding.LOGICAL_RULES`.

`train_step(state, batch, rng) -> (state, metrics)` takes one batch per objective ({"mlm": {...}, "tlm": {...}})
and minimises sum_o weight_o * loss_o, where loss_o is objective o's mean token loss over the *whole* global
batch. Gradient accumulation splits every objective's rows into `grad_accum` micro-batches and scans over them;
each micro-batch's loss is normalised by the whole batch's prediction count (known up front from the masks), so
the summed gradient equals the big-batch gradient exactly (up to float reassociation). Dropout keys are
`fold_in(fold_in(fold_in(rng, step), objective), micro_batch)`: a pure function of the run's rng and the step.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from xlm_jax.models.config import ModelConfig
from xlm_jax.core.errors import UserError
from xlm_jax.models import families
from xlm_jax.models.xlm import init_params
from xlm_jax.training.flops import prediction_count
from xlm_jax.training.objectives import OBJECTIVES
from xlm_jax.training.optim import current_lr
from xlm_jax.training.sharding import BATCH_AXES, LOGICAL_RULES, batch_sharding, batch_size_multiple, param_shardings

# Fixed per objective (as the data pipeline's keys) so enabling another objective leaves the others' dropout alone.
OBJECTIVE_RNG_KEYS = {"mlm": 0, "clm": 1, "tlm": 2}


def abstract_boxed(model: nn.Module) -> Any:
    """Shapes of `model`'s parameters, still boxed with their logical axis names (nothing is computed)."""
    return jax.eval_shape(lambda rng: init_params(model, rng), jax.random.key(0))


def boxed_abstract_params(model_cfg: ModelConfig) -> Any:
    return abstract_boxed(families.masked_lm(model_cfg))


def state_shardings(model: nn.Module, optimizer: optax.GradientTransformation, mesh: Mesh) -> tuple[Any, Any]:
    """(abstract state, NamedSharding tree) of {"params", "opt_state", "step"} for any of our models: parameters
    by the logical rules, Adam moments like their parameter, counters replicated. Pretraining and fine-tuning
    share it."""
    boxed = abstract_boxed(model)
    params_sh = param_shardings(boxed, mesh)
    abstract_params = nn.unbox(boxed)
    abstract_opt = jax.eval_shape(optimizer.init, abstract_params)
    replicated = NamedSharding(mesh, PartitionSpec())
    # Moments mirror their parameter's sharding; counters and hyperparameters are replicated.
    # (Frozen parameters, xlm_jax.pretrain.adapt.restrict_optimizer, have an optax.MaskedNode where moments would be.)
    opt_sh = optax.tree_map_params(
        optimizer, lambda value, sharding: value if isinstance(value, optax.MaskedNode) else sharding, abstract_opt,
        params_sh, transform_non_params=lambda _: replicated, is_leaf=lambda v: isinstance(v, optax.MaskedNode),
    )
    shardings = {"params": params_sh, "opt_state": opt_sh, "step": replicated}
    abstract = {
        "params": abstract_params,
        "opt_state": abstract_opt,
        "step": jax.ShapeDtypeStruct((), jnp.int32),
    }
    return abstract, shardings


def abstract_state(model_cfg: ModelConfig, optimizer: optax.GradientTransformation, mesh: Mesh) -> tuple[Any, Any]:
    """(ShapeDtypeStruct tree carrying shardings, NamedSharding tree): the restore target for orbax."""
    abstract, shardings = state_shardings(families.masked_lm(model_cfg), optimizer, mesh)
    with_shardings = jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings
    )
    return with_shardings, shardings


def init_state(model_cfg: ModelConfig, optimizer: optax.GradientTransformation, mesh: Mesh, rng) -> tuple[dict, Any]:
    """Fresh state created directly in its sharded layout (no host-side copy of the full parameters)."""
    model = families.masked_lm(model_cfg)
    _, shardings = state_shardings(model, optimizer, mesh)

    def init(rng):
        params = nn.unbox(init_params(model, rng))
        return {"params": params, "opt_state": optimizer.init(params), "step": jnp.zeros((), jnp.int32)}

    # No logical-rules context here: init runs the model on one dummy row, which must not be batch-sharded.
    with jax.set_mesh(mesh):
        state = jax.jit(init, out_shardings=shardings)(rng)
    return state, shardings


def _objective_sums(objective: str, rows: dict, example_lang: jax.Array, n_groups: int) -> dict:
    seg = functools.partial(jax.ops.segment_sum, segment_ids=example_lang, num_segments=n_groups)
    return {
        "loss_sum": rows["loss_sum"].sum(),
        "correct": rows["correct"].sum(),
        "count": rows["count"].sum(),
        "group_loss_sum": seg(rows["loss_sum"]),
        "group_correct": seg(rows["correct"]),
        "group_count": seg(rows["count"]),
    }


def _micro_batches(batch: dict, grad_accum: int, mesh: Mesh) -> dict:
    """[B, ...] -> [grad_accum, B / grad_accum, ...], micro-batch m = rows m, m + A, m + 2A, ...

    Strided rather than contiguous so that every device keeps its own rows: each device's contiguous block of
    rows holds B / (A · devices) rows of every micro-batch, and no data moves."""

    def split(x):
        b = x.shape[0]
        x = x.reshape((b // grad_accum, grad_accum) + x.shape[1:]).swapaxes(0, 1)
        spec = PartitionSpec(None, BATCH_AXES, *([None] * (x.ndim - 2)))
        return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec))

    return jax.tree.map(split, batch)


@dataclasses.dataclass(frozen=True)
class StepLoss:
    """What `make_step` needs to know about a loss; everything else (accumulation, clipping, updates, metrics of the
    optimisation) is the factory's.

    fn(params, batch, rng, totals) -> (scalar, sums): `scalar` is this (micro-)batch's share of the whole batch's
        loss, already divided by `totals` (so that the micro-batches' shares add up to the big batch's loss),
        float32; `sums` a tree of float32 arrays that add over micro-batches (loss sums, counts).
    totals(batch) -> tree of float32 normalisers of the *whole* batch (e.g. its prediction count, >= 1), computed
        before the batch is split into micro-batches.
    metrics(sums) -> dict of float32 metrics from the summed `sums` (per-step figures such as loss, accuracy).
    select(batch) -> batch: host-side, before the jitted call: the parts of the batch the loss reads, raising
        UserError for a missing one. Default: the batch as given.
    grad(params, batch, rng, totals) -> (grads, sums): the gradient of `fn` computed another way (GradCache:
        `xlm_jax.tasks.contrastive.grad_cache_step`), with `fn`'s sums. Default: `jax.grad(fn, has_aux=True)`.
    """

    fn: Callable
    totals: Callable
    metrics: Callable
    select: Callable | None = None
    grad: Callable | None = None


def make_step(
    loss: StepLoss,
    optimizer: optax.GradientTransformation,
    mesh: Mesh,
    state_shardings: Any,
    *,
    grad_accum: int = 1,
    schedule: optax.Schedule | None = None,
    constrain_activations: bool = False,
) -> Callable:
    """The one train-step factory: -> train_step(state, batch, rng) -> (state, metrics), jitted once with explicit
    shardings (`state_shardings`; the batch's rows over data x fsdp, `sharding.batch_sharding`), `state` donated.

    state: {"params", "opt_state", "step" (int32 scalar)}; batch: a tree of [B, ...] arrays, B divisible by
    data x fsdp x grad_accum (else UserError before the call); rng: a PRNG key, folded with the state's step
    (`fold_in(rng, step)`) and, with accumulation, the micro-batch index m (`fold_in(., m)`): dropout is a pure
    function of the run's key and the step.

    Gradient accumulation splits every leaf's rows into `grad_accum` strided micro-batches (`_micro_batches`) and
    scans over them, adding gradients and `sums`; `loss.totals` is computed on the whole batch, so the summed
    gradient is the big batch's. Clipping, learning-rate schedules and per-parameter learning-rate scales are
    `optimizer`'s transforms (`xlm_jax.training.optim`), applied here once per step.

    Metrics (float32 scalars): `loss.metrics(sums)`, plus grad_norm (global norm before clipping) and lr (of this
    update: `schedule(step)` if given, else the optimizer's injected rate, NaN if it has none). NaN / inf
    detection reads loss and grad_norm on device (`first_non_finite`, `all_finite`).
    """
    if grad_accum < 1:
        raise UserError(f"grad_accum={grad_accum}: must be >= 1")
    rows_multiple = batch_size_multiple(mesh) * grad_accum
    grad_fn = loss.grad or jax.grad(loss.fn, has_aux=True)

    def step_fn(state, batch, rng):
        params = state["params"]
        totals = loss.totals(batch)
        step_rng = jax.random.fold_in(rng, state["step"])
        if grad_accum == 1:
            grads, sums = grad_fn(params, batch, step_rng, totals)
        else:
            micro = _micro_batches(batch, grad_accum, mesh)

            def body(carry, xs):
                index, micro_batch = xs
                g, s = grad_fn(params, micro_batch, jax.random.fold_in(step_rng, index), totals)
                return jax.tree.map(jnp.add, carry, (g, s)), None

            zeros = jax.tree.map(
                jnp.zeros_like,
                jax.eval_shape(grad_fn, params, jax.tree.map(lambda x: x[0], micro), step_rng, totals),
            )
            (grads, sums), _ = jax.lax.scan(body, zeros, (jnp.arange(grad_accum), micro))
        grad_norm = optax.global_norm(grads)
        updates, opt_state = optimizer.update(grads, state["opt_state"], params)
        new_state = {"params": optax.apply_updates(params, updates), "opt_state": opt_state, "step": state["step"] + 1}
        if schedule is not None:
            lr = jnp.asarray(schedule(state["step"]), jnp.float32)
        else:
            injected = current_lr(opt_state)
            lr = jnp.asarray(jnp.nan if injected is None else injected, jnp.float32)
        return new_state, {**loss.metrics(sums), "grad_norm": grad_norm, "lr": lr}

    replicated = NamedSharding(mesh, PartitionSpec())
    jitted = jax.jit(
        step_fn,
        in_shardings=(state_shardings, batch_sharding(mesh), replicated),
        out_shardings=(state_shardings, replicated),
        donate_argnums=(0,),
    )

    def train_step(state, batch, rng):
        batch = loss.select(batch) if loss.select is not None else batch
        _check_rows(batch, rows_multiple)
        with jax.set_mesh(mesh), nn.logical_axis_rules(LOGICAL_RULES if constrain_activations else ()):
            return jitted(state, batch, rng)

    train_step.jitted = jitted  # for .lower(...) / cost analysis
    return train_step


def _check_rows(batch: Any, rows_multiple: int) -> None:
    """Every leaf's rows must split over data x fsdp x grad_accum; the message names the leaf's top-level key."""
    for path, leaf in jax.tree_util.tree_leaves_with_path(batch):
        rows = np.shape(leaf)[0] if np.ndim(leaf) else 0
        if rows % rows_multiple:
            name = str(getattr(path[0], "key", "batch")) if path else "batch"
            raise UserError(f"{name} batch of {rows} rows is not divisible by data x fsdp x grad_accum = "
                            f"{rows_multiple}")


def objectives_loss(model_cfg: ModelConfig, objectives: dict[str, float], n_groups: dict[str, int]) -> StepLoss:
    """The pretraining loss for `make_step`: sum_o weight_o * loss_o over a batch {objective: {...}}, loss_o the
    mean token loss of objective o over the whole batch (normalised by its prediction count). Sums and metrics:
    see `make_train_step`. Raises UserError for no positive weight, an unknown objective, or missing n_groups."""
    weights = {name: float(w) for name, w in objectives.items() if w > 0}
    unknown = sorted(set(weights) - set(OBJECTIVES))
    if unknown or not weights:
        raise UserError(f"objectives {objectives}: need positive weights for some of {sorted(OBJECTIVES)}")
    missing = [name for name in weights if name not in n_groups]
    if missing:
        raise UserError(f"n_groups lacks {missing} (number of languages / pairs per objective)")
    model = families.masked_lm(model_cfg)

    def fn(params, batch, rng, denominators):
        total = jnp.zeros((), jnp.float32)
        sums = {}
        for name, weight in weights.items():
            key = jax.random.fold_in(rng, OBJECTIVE_RNG_KEYS[name])
            _, metrics = OBJECTIVES[name](model, params, batch[name], key)
            rows = metrics["rows"]
            total = total + weight * rows["loss_sum"].sum() / denominators[name]
            sums[name] = _objective_sums(name, rows, batch[name]["example_lang"], n_groups[name])
            sums[name]["input_tokens"] = (batch[name]["attention_mask"] > 0).sum().astype(jnp.float32)
        return total, sums

    def totals(batch):
        return {name: jnp.maximum(prediction_count(name, b), 1.0) for name, b in batch.items()}

    def metrics_of(sums):
        metrics = {}
        loss = jnp.zeros((), jnp.float32)
        for name, s in sums.items():
            count = jnp.maximum(s["count"], 1.0)
            metrics[f"{name}/loss"] = s["loss_sum"] / count
            metrics[f"{name}/accuracy"] = s["correct"] / count
            metrics[f"{name}/tokens"] = s["count"]
            metrics[f"{name}/input_tokens"] = s["input_tokens"]
            for field in ("group_loss_sum", "group_correct", "group_count"):
                metrics[f"{name}/{field}"] = s[field]
            loss = loss + weights[name] * metrics[f"{name}/loss"]
        metrics["loss"] = loss
        return metrics

    def select(batch):
        for name in weights:
            if name not in batch:
                raise UserError(f"train batch lacks objective {name!r} (has {sorted(batch)})")
        return {name: batch[name] for name in weights}

    return StepLoss(fn, totals, metrics_of, select)


def make_train_step(
    model_cfg: ModelConfig,
    optimizer: optax.GradientTransformation,
    mesh: Mesh,
    state_shardings: Any,
    objectives: dict[str, float],
    n_groups: dict[str, int],
    grad_accum: int = 1,
    *,
    schedule: optax.Schedule | None = None,
    constrain_activations: bool = False,
) -> Callable:
    """The pretraining step: `make_step(objectives_loss(...))` -> train_step(state, batch, rng) -> (state,
    metrics); see the module docstring.

    Metrics (float32 scalars unless noted): loss, grad_norm (before clipping), lr (of this update: `schedule` if
    given, else the optimizer's injected rate), and per objective o: o/loss, o/accuracy, o/tokens (predicted
    tokens), o/input_tokens (real input tokens), o/group_loss_sum, o/group_correct, o/group_count
    ([n_groups[o]], summed by batch[o]["example_lang"]).
    `state` is donated: do not use it after the call.

    `constrain_activations` runs the model under `nn.logical_axis_rules(LOGICAL_RULES)` so that its
    `with_logical_constraint` calls pin activations to (batch over data x fsdp). The losses are the same either
    way (checked to 1e-6 on (8,1,1), (1,8,1), (2,2,2)); it is off by default because on a (2, 2, 2) CPU mesh XLA
    then reports involuntary full rematerialisations (resharding the embedding output), while without it XLA
    propagates the batch sharding from the inputs, which gives the same layout for data / fsdp meshes.
    """
    loss = objectives_loss(model_cfg, objectives, n_groups)
    return make_step(loss, optimizer, mesh, state_shardings, grad_accum=grad_accum, schedule=schedule,
                     constrain_activations=constrain_activations)


@jax.jit
def first_non_finite(first_bad: jax.Array, metrics: dict, step: jax.Array) -> jax.Array:
    """The first step whose loss or gradient norm was NaN / inf: `step` if this one is and none was before
    (`first_bad` < 0), else `first_bad`. Stays on device, so training checks it without a host sync per step."""
    finite = jnp.isfinite(metrics["loss"]) & jnp.isfinite(metrics["grad_norm"])
    return jnp.where((first_bad < 0) & ~finite, step, first_bad)


@jax.jit
def all_finite(tree) -> jax.Array:
    """Whether every element of every array in `tree` is finite (checked before a checkpoint is saved)."""
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def make_eval_step(model_cfg: ModelConfig, mesh: Mesh, state_shardings: Any, *, objective: str = "mlm",
                   n_groups: int | None = None, constrain_activations: bool = False) -> Callable:
    """-> eval_fn(params, batch) -> {"loss_sum", "correct", "count"} (float32 sums over the batch; with
    `n_groups`, also "group_loss_sum" / "group_correct" / "group_count" by example_lang). No dropout."""
    if objective not in OBJECTIVES:
        raise UserError(f"eval objective {objective!r}: valid are {sorted(OBJECTIVES)}")
    model = families.masked_lm(model_cfg)
    params_sh = state_shardings["params"] if isinstance(state_shardings, dict) and "params" in state_shardings \
        else state_shardings

    def eval_fn(params, batch):
        _, metrics = OBJECTIVES[objective](model, params, batch, None)
        sums = _objective_sums(objective, metrics["rows"], batch["example_lang"], n_groups or 1)
        keys = ("loss_sum", "correct", "count")
        if n_groups:
            keys += ("group_loss_sum", "group_correct", "group_count")
        return {k: sums[k] for k in keys}

    replicated = NamedSharding(mesh, PartitionSpec())
    jitted = jax.jit(eval_fn, in_shardings=(params_sh, batch_sharding(mesh)), out_shardings=replicated)

    def eval_step(params, batch):
        with jax.set_mesh(mesh), nn.logical_axis_rules(LOGICAL_RULES if constrain_activations else ()):
            return jitted(params, batch)

    eval_step.jitted = jitted
    return eval_step
