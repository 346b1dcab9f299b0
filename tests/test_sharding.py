"""Mesh shapes, the logical-rule table with its divisibility fallback, batch placement, distributed init."""

import jax
import numpy as np
import pytest
from jax.sharding import AbstractMesh, AxisType, PartitionSpec as P

from xlm_jax.models.config import get_model_config
from xlm_jax.core.errors import UserError
from xlm_jax.training.sharding import (
    MeshConfig, batch_sharding, global_batch, initialize_distributed, logical_spec, make_mesh, param_shardings,
)
from xlm_jax.training.step import boxed_abstract_params


def abstract_mesh(data, fsdp, tensor):
    return AbstractMesh((data, fsdp, tensor), ("data", "fsdp", "tensor"), axis_types=(AxisType.Auto,) * 3)


def test_mesh_config_fills_and_validates():
    assert MeshConfig().shape(8) == (8, 1, 1)
    assert MeshConfig(data=-1, fsdp=2, tensor=2).shape(8) == (2, 2, 2)
    assert MeshConfig(data=1, fsdp=-1).shape(8) == (1, 8, 1)
    assert MeshConfig(data=2, fsdp=4, tensor=1).shape(8) == (2, 4, 1)
    with pytest.raises(UserError, match="8 are available"):
        MeshConfig(data=3, fsdp=1).shape(8)
    with pytest.raises(UserError, match="not divisible"):
        MeshConfig(data=-1, fsdp=3).shape(8)
    with pytest.raises(UserError, match="at most one -1"):
        MeshConfig(data=-1, fsdp=-1).shape(8)
    with pytest.raises(UserError):
        MeshConfig(data=0).shape(8)


def test_make_mesh_on_this_host():
    mesh = make_mesh(MeshConfig(), jax.devices()[:1])
    assert mesh.axis_names == ("data", "fsdp", "tensor") and mesh.devices.shape == (1, 1, 1)
    assert all(t == AxisType.Auto for t in mesh.axis_types)


def test_logical_rules_and_divisibility_fallback():
    mesh = abstract_mesh(2, 2, 2)
    assert logical_spec(("layers", "embed", "heads", "kv"), (2, 64, 4, 16), mesh) == P(None, "fsdp", "tensor", None)
    assert logical_spec(("layers", "heads", "kv", "embed"), (2, 4, 16, 64), mesh) == P(None, "tensor", None, "fsdp")
    assert logical_spec(("layers", "embed", "mlp"), (2, 64, 128), mesh) == P(None, "fsdp", "tensor")
    assert logical_spec(("vocab", "embed"), (1000, 64), mesh) == P("tensor", "fsdp")
    assert logical_spec(("layers", "norm"), (2, 64), mesh) == P(None, None)
    assert logical_spec(("batch", "length", "embed_act"), (8, 32, 64), mesh) == P(("data", "fsdp"), None, None)
    # A dimension that does not divide its mesh axes is replicated, the others stay sharded.
    wide = abstract_mesh(1, 8, 8)
    assert logical_spec(("layers", "embed", "heads", "kv"), (2, 64, 4, 16), wide) == P(None, "fsdp", None, None)
    assert logical_spec(("vocab", "embed"), (1001, 64), wide) == P(None, "fsdp")
    assert logical_spec(("pos", "embed"), (130, 60), wide) == P(None, None)


def test_param_shardings_follow_the_rules_on_the_real_tree():
    boxed = boxed_abstract_params(get_model_config("xlmr_tiny"))
    sh = param_shardings(boxed, abstract_mesh(1, 4, 8))
    enc = sh["encoder"]
    assert enc["embeddings"]["word_embeddings"]["embedding"].spec == P("tensor", "fsdp")
    assert enc["embeddings"]["position_embeddings"]["embedding"].spec == P(None, "fsdp")
    assert enc["layers"]["attention"]["query"]["kernel"].spec == P(None, "fsdp", None, None)  # 4 heads on 8
    assert enc["layers"]["mlp"]["wi"]["kernel"].spec == P(None, "fsdp", "tensor")
    assert enc["layers"]["mlp"]["wo"]["kernel"].spec == P(None, "tensor", "fsdp")
    assert enc["layers"]["attention_norm"]["scale"].spec == P(None, None)
    assert sh["lm_head"]["bias"].spec == P("tensor")
    # Same structure as the unboxed parameters.
    assert jax.tree.structure(jax.tree.map(lambda _: 0, sh)) == jax.tree.structure(
        jax.tree.map(lambda _: 0, flax_unbox(boxed)))


def flax_unbox(tree):
    import flax.linen as nn

    return nn.unbox(tree)


def test_global_batch_single_process_roundtrip():
    mesh = make_mesh(MeshConfig(), jax.devices()[:1])
    local = {"mlm": {"input_ids": np.arange(16, dtype=np.int32).reshape(4, 4)}}
    out = global_batch(mesh, local)
    assert out["mlm"]["input_ids"].sharding == batch_sharding(mesh)
    np.testing.assert_array_equal(np.asarray(out["mlm"]["input_ids"]), local["mlm"]["input_ids"])


def test_initialize_distributed_is_a_noop_or_rejects_partial_settings(monkeypatch):
    for var in ("XLMJAX_COORDINATOR", "XLMJAX_NUM_PROCESSES", "XLMJAX_PROCESS_ID", "TPU_WORKER_HOSTNAMES"):
        monkeypatch.delenv(var, raising=False)
    initialize_distributed(None, None, None)
    initialize_distributed("127.0.0.1:1234", 1, 0)  # one process: nothing to start
    with pytest.raises(UserError, match="give all three"):
        initialize_distributed("127.0.0.1:1234", None, None)
    monkeypatch.setenv("XLMJAX_NUM_PROCESSES", "2")
    with pytest.raises(UserError, match="give all three"):
        initialize_distributed()
    with pytest.raises(UserError, match="process_id=5"):
        initialize_distributed("127.0.0.1:1234", 2, 5)


class _Device:
    def __init__(self, kind):
        self.device_kind = kind


@pytest.mark.parametrize("mesh, n, words", [
    (dict(data=3), 1, ["mesh data=3 x fsdp=1 x tensor=1 needs 3 devices, but 1 is available (1 x cpu)"]),
    (dict(data=2, fsdp=2), 2, ["needs 4 devices, but 2 are available (2 x cpu)"]),
    (dict(data=-1, tensor=2), 1, ["the fixed axes need a multiple of 2 devices, but the 1 available (1 x cpu)"]),
    (dict(data=-1, fsdp=3), 8, ["need a multiple of 3 devices, but the 8 available (8 x cpu) are not divisible"]),
])
def test_a_mesh_the_devices_cannot_hold_names_what_it_needs_and_what_was_found(mesh, n, words):
    from xlm_jax.training.sharding import check_mesh_devices

    with pytest.raises(UserError) as err:
        check_mesh_devices(MeshConfig(**mesh), [_Device("cpu")] * n, also="a batch note")
    for word in words + ["(also: a batch note)"]:
        assert word in str(err.value), str(err.value)
    check_mesh_devices(MeshConfig(data=2, fsdp=2), [_Device("H100")] * 4)  # fits: nothing raised


def test_mesh_data_3_on_one_device_is_refused_for_its_devices_before_the_batch_size():
    """Issue 20: mesh.data=3 on one device was refused with advice about train.batch_size alone."""
    from xlm_jax.pretrain.config import load_config

    assert jax.device_count() == 1
    for overrides in (["mesh.data=3"], ["mesh.data=3", "train.batch_size=4"], ["mesh.data=1", "mesh.fsdp=2", "train.batch_size=5"]):
        with pytest.raises(UserError) as err:
            load_config(None, overrides)
        message = str(err.value)
        assert message.startswith("mesh data=") and "devices, but 1 is available (1 x " in message, message
        assert "(also: train.batch_size=" in message and "multiple of" in message, message
