"""One device mesh (data, fsdp, tensor) and the logical-axis rule table that places parameters and batches on it.

The model names every parameter dimension logically (vocab, embed, heads, mlp, ...; see `xlm_jax.models.xlm`); this
module alone decides where those names live on the mesh:

- "data": pure data parallelism (parameters replicated, batch rows split);
- "fsdp": ZeRO-3 style: batch rows split *and* parameters / optimizer state sharded along their "embed"
  dimension, gathered by XLA just before use;
- "tensor": Megatron-style tensor parallelism: attention heads, MLP hidden units and the vocabulary split.

A dimension whose size does not divide the product of its mesh axes is replicated instead (for example a
130-row position table on fsdp=4, or 4 heads on tensor=8): correctness never depends on divisibility, only
memory does. `param_shardings` applies that fallback per dimension.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from xlm_jax.core.errors import UserError, check_fields, check_range

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")

# Logical name -> mesh axes. Names not listed (or mapped to None) are replicated.
LOGICAL_RULES: tuple[tuple[str, str | tuple[str, ...] | None], ...] = (
    # activations
    ("batch", BATCH_AXES),
    ("length", None),
    ("embed_act", None),
    # parameters
    ("vocab", "tensor"),  # word table rows and the tied projection: vocab-parallel logits
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("mlp", "tensor"),
    ("kv", None),
    ("layers", None),
    ("pos", None),
    ("types", None),
    ("langs", None),
    ("norm", None),
    ("embed_out", None),
    ("labels", None),
)


@dataclass(frozen=True)
class MeshConfig:
    data: int = -1  # -1: all devices not used by fsdp x tensor
    fsdp: int = 1
    tensor: int = 1

    def __post_init__(self):
        check_fields(self, "mesh.")
        check_mesh_sizes({f"mesh.{axis}": getattr(self, axis) for axis in MESH_AXES})

    def shape(self, n_devices: int, found: str = "") -> tuple[int, int, int]:
        """(data, fsdp, tensor) over `n_devices`; UserError naming the devices the mesh needs and those found
        (`found`: what they are, e.g. "1 x cpu") when they do not match."""
        sizes = {"data": self.data, "fsdp": self.fsdp, "tensor": self.tensor}
        seen = f" ({found})" if found else ""
        fill = [k for k, v in sizes.items() if v == -1]
        known = math.prod(v for v in sizes.values() if v != -1)
        if fill:
            if n_devices % known:
                raise UserError(
                    f"mesh data={sizes['data']} x fsdp={sizes['fsdp']} x tensor={sizes['tensor']}: the fixed axes "
                    f"need a multiple of {known} devices, but the {n_devices} available{seen} are not divisible by "
                    f"the fixed axes' product {known}"
                )
            sizes[fill[0]] = n_devices // known
        if math.prod(sizes.values()) != n_devices:
            raise UserError(
                f"mesh data={sizes['data']} x fsdp={sizes['fsdp']} x tensor={sizes['tensor']} needs "
                f"{math.prod(sizes.values())} devices, but {n_devices} {'is' if n_devices == 1 else 'are'} "
                f"available{seen}; set one axis to -1 to fill"
            )
        return sizes["data"], sizes["fsdp"], sizes["tensor"]


def check_mesh_devices(cfg: MeshConfig, devices=None, also: str = "") -> None:
    """UserError naming the devices the mesh `cfg` needs and the devices found (`devices`, default
    jax.devices(): starts the backend) when they do not fit it; `also` is appended (a batch that would not divide
    over the mesh either)."""
    devices = list(jax.devices() if devices is None else devices)
    try:
        cfg.shape(len(devices), describe_devices(devices))
    except UserError as err:
        raise UserError(f"{err}" + (f" (also: {also})" if also else "")) from None


def describe_devices(devices) -> str:
    """What the devices are, for messages: "1 x cpu", "8 x NVIDIA H100 80GB HBM3"."""
    kinds: dict[str, int] = {}
    for d in devices:
        kinds[d.device_kind] = kinds.get(d.device_kind, 0) + 1
    return ", ".join(f"{n} x {kind}" for kind, n in kinds.items()) or "none"


def check_mesh_sizes(sizes: dict[str, int]) -> None:
    """Mesh axis sizes ({key: size}, in data, fsdp, tensor order): each >= 1, or -1 (the devices left) for
    at most one of them."""
    for key, size in sizes.items():
        check_range(key, size, 1, integer=True, also={-1: "all devices not used by the other axes"})
    fill = [key for key, size in sizes.items() if size == -1]
    if len(fill) > 1:
        raise UserError(f"{' and '.join(f'{k}=-1' for k in fill)}: at most one -1 (fill with the rest) per mesh")


def make_mesh(cfg: MeshConfig, devices=None) -> Mesh:
    """A (data, fsdp, tensor) mesh over all (or the given) devices, with Auto axes (sharding propagation by XLA,
    steered by `with_sharding_constraint`), as the logical-rule style of Flax linen expects."""
    if devices is not None:
        # Explicit devices: taken in the given order (process-major when they come from jax.devices()), so
        # each process's devices form a contiguous block of batch rows, as `global_batch` assumes.
        devices = list(devices)
        grid = np.empty(len(devices), dtype=object)
        grid[:] = devices
        return Mesh(grid.reshape(cfg.shape(len(devices))), MESH_AXES, axis_types=(AxisType.Auto,) * 3)
    shape = cfg.shape(jax.device_count(), describe_devices(jax.devices()))
    return jax.make_mesh(shape, MESH_AXES, axis_types=(AxisType.Auto,) * 3)


def _mesh_axis_size(mesh: Mesh, axes) -> int:
    if axes is None:
        return 1
    axes = (axes,) if isinstance(axes, str) else axes
    return math.prod(mesh.shape[a] for a in axes)


def _fit(spec: PartitionSpec, shape: tuple[int, ...], mesh: Mesh) -> PartitionSpec:
    """Replicates every dimension whose size does not divide its mesh axes."""
    dims = list(spec) + [None] * (len(shape) - len(spec))
    return PartitionSpec(*(a if size % _mesh_axis_size(mesh, a) == 0 else None for a, size in zip(dims, shape)))


def logical_spec(names: tuple[str | None, ...] | None, shape: tuple[int, ...], mesh: Mesh,
                 rules=LOGICAL_RULES) -> PartitionSpec:
    """Mesh PartitionSpec for one array with logical axis `names`, after the divisibility fallback."""
    if names is None:
        return PartitionSpec()
    spec = nn.logical_to_mesh_axes(names, rules)
    return _fit(spec, tuple(shape), mesh)


def _is_box(x) -> bool:
    return isinstance(x, nn.Partitioned)


def param_shardings(boxed_params_or_abstract, mesh: Mesh, rules=LOGICAL_RULES) -> Any:
    """NamedSharding per leaf of a params tree boxed with `nn.Partitioned` (real arrays or ShapeDtypeStructs).

    The result has the *unboxed* tree's structure (one NamedSharding per array). Unboxed leaves are replicated.
    """

    def one(leaf):
        if _is_box(leaf):
            return NamedSharding(mesh, logical_spec(leaf.names, leaf.value.shape, mesh, rules))
        return NamedSharding(mesh, PartitionSpec())

    return jax.tree.map(one, boxed_params_or_abstract, is_leaf=_is_box)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Rows over (data, fsdp); every other dimension replicated."""
    return NamedSharding(mesh, PartitionSpec(BATCH_AXES))


def batch_size_multiple(mesh: Mesh) -> int:
    """Global rows must be a multiple of this (data x fsdp)."""
    return _mesh_axis_size(mesh, BATCH_AXES)


def global_batch(mesh: Mesh, local: dict) -> dict:
    """Process-local NumPy rows -> global jax.Arrays sharded by `batch_sharding` (nested dicts allowed).

    Each process passes its own contiguous slice of rows (process p: rows [p·B/P, (p+1)·B/P)), as
    `BatchSource(process_index=p, process_count=P)` produces; the global row order is then process-major.
    This needs each process's devices to own a contiguous block of rows, which holds when the mesh comes from
    `make_mesh` (process-major device order) and data x fsdp is a multiple of the process count (a "tensor"
    axis spanning processes would make two processes own the same rows).
    """
    sharding = batch_sharding(mesh)
    multiple = batch_size_multiple(mesh)

    def one(x):
        x = np.asarray(x)
        global_rows = x.shape[0] * jax.process_count()
        if global_rows % multiple:
            raise UserError(
                f"global batch of {global_rows} rows is not divisible by mesh data x fsdp = {multiple}"
            )
        return jax.make_array_from_process_local_data(sharding, x, (global_rows,) + x.shape[1:])

    return jax.tree.map(one, local)


def initialize_distributed(coordinator: str | None = None, num_processes: int | None = None,
                           process_id: int | None = None, **kwargs) -> None:
    """Starts multi-process JAX when asked; a no-op for a single process.

    Sources, first match wins: the arguments; env XLMJAX_COORDINATOR / XLMJAX_NUM_PROCESSES / XLMJAX_PROCESS_ID;
    a multi-host TPU slice (TPU_WORKER_HOSTNAMES lists several hosts: JAX detects the rest itself). Must run before
    any other JAX call. On CPU, cross-process collectives use gloo (jax's default `jax_cpu_collectives_implementation`).
    `kwargs` go to `jax.distributed.initialize` (e.g. initialization_timeout, local_device_ids).
    """
    coordinator = coordinator or os.environ.get("XLMJAX_COORDINATOR")
    if num_processes is None and os.environ.get("XLMJAX_NUM_PROCESSES"):
        num_processes = int(os.environ["XLMJAX_NUM_PROCESSES"])
    if process_id is None and os.environ.get("XLMJAX_PROCESS_ID"):
        process_id = int(os.environ["XLMJAX_PROCESS_ID"])
    if coordinator is not None or num_processes is not None or process_id is not None:
        if coordinator is None or num_processes is None or process_id is None:
            raise UserError(
                f"distributed: coordinator={coordinator!r}, num_processes={num_processes}, process_id={process_id}: "
                "give all three (or none for a single process)"
            )
        if num_processes <= 1:
            return
        if not 0 <= process_id < num_processes:
            raise UserError(f"distributed: process_id={process_id} must be in [0, num_processes={num_processes})")
        jax.distributed.initialize(coordinator, num_processes, process_id, **kwargs)
        return
    if len([h for h in os.environ.get("TPU_WORKER_HOSTNAMES", "").split(",") if h]) > 1:
        jax.distributed.initialize(**kwargs)
