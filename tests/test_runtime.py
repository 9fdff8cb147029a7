"""The generated module's API: params/grads, accumulation, optimizer rule, state round-trips, config, errors."""

from __future__ import annotations

import json
import sys
import types

import numpy as np
import pytest
from conftest import build

MLP = """
model Mlp {
    input [6]
    fc1 = Linear(8)
    ReLU
    fc2 = Linear(3)
    loss CrossEntropy
    optimizer SGD(lr=0.1, momentum=0.9, weight_decay=0.01)
}
"""


@pytest.fixture
def batch(rng):
    return rng.standard_normal((5, 6)), rng.integers(0, 3, 5)


def test_params_and_grads_share_names_and_shapes():
    net = build(MLP)
    assert list(net.params) == ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]
    assert net.params["fc1.weight"].shape == (6, 8)
    assert net.params["fc2.bias"].shape == (3,)
    assert {k: v.shape for k, v in net.grads.items()} == {k: v.shape for k, v in net.params.items()}
    assert not net.params["fc1.bias"].any()


def test_same_seed_same_parameters_and_dtypes():
    a, b, c = build(MLP, seed=7), build(MLP, seed=7), build(MLP, seed=8)
    for name in a.params:
        np.testing.assert_array_equal(a.params[name], b.params[name])
    assert not np.array_equal(a.params["fc1.weight"], c.params["fc1.weight"])
    assert build(MLP, dtype="float32").params["fc1.weight"].dtype == np.float32
    assert a.params["fc1.weight"].dtype == np.float64


def test_he_normal_has_the_documented_scale():
    net = build("model Big { input [400] Linear(500) }")
    assert abs(net.params["linear_1.weight"].std() - np.sqrt(2 / 400)) < 0.002


def test_gradients_accumulate_until_zero_grad(batch):
    x, y = batch
    net = build(MLP)
    net.loss(x, y)
    net.backward()
    once = {k: v.copy() for k, v in net.grads.items()}
    net.loss(x, y)
    net.backward()
    for name, value in once.items():
        np.testing.assert_allclose(net.grads[name], 2 * value, rtol=1e-12)
    net.zero_grad()
    assert all(not g.any() for g in net.grads.values())


def test_forward_returns_fresh_arrays(batch):
    x, _ = batch
    net = build(MLP)
    first = net.forward(x)
    kept = first.copy()
    net.forward(x * 2)
    np.testing.assert_array_equal(first, kept)


def test_sgd_matches_the_pytorch_rule_by_hand(batch):
    x, y = batch
    net = build(MLP)
    lr, momentum, decay = 0.1, 0.9, 0.01
    params = {k: v.copy() for k, v in net.params.items()}
    buffers = {}
    for step in range(3):
        net.train_step(x, y)
        for name, grad in net.grads.items():
            g = grad + decay * params[name]
            buffers[name] = g if step == 0 else momentum * buffers[name] + g
            params[name] = params[name] - lr * buffers[name]
            np.testing.assert_allclose(net.params[name], params[name], rtol=1e-12, atol=1e-15)
    assert net.step_count == 3


def test_train_step_equals_zero_grad_loss_backward_step(batch):
    x, y = batch
    a, b = build(MLP), build(MLP)
    for _ in range(3):
        loss_a = a.train_step(x, y)
        b.zero_grad()
        loss_b = b.loss(x, y)
        b.backward()
        b.step()
        assert loss_a == loss_b
        for name in a.params:
            np.testing.assert_array_equal(a.params[name], b.params[name])


def test_save_load_resumes_bit_exactly(batch, tmp_path):
    x, y = batch
    net = build(MLP)
    for _ in range(3):
        net.train_step(x, y)
    net.save(tmp_path / "state.npz")
    resumed = build(MLP, seed=99)
    resumed.load(tmp_path / "state.npz")
    for _ in range(4):
        assert net.train_step(x, y) == resumed.train_step(x, y)
    for name in net.params:
        np.testing.assert_array_equal(net.params[name], resumed.params[name])
    assert resumed.step_count == net.step_count == 7


def test_state_dict_is_a_copy_and_round_trips(batch):
    x, y = batch
    net = build(MLP)
    net.train_step(x, y)
    state = net.state_dict()
    state["params/fc1.weight"][...] = 0
    assert net.params["fc1.weight"].any()
    other = build(MLP, seed=3)
    other.load_state_dict(net.state_dict())
    assert other.train_step(x, y) == net.train_step(x, y)


def test_load_state_dict_names_the_offending_key():
    net = build(MLP)
    state = net.state_dict()
    del state["params/fc2.bias"]
    with pytest.raises(KeyError, match="params/fc2.bias"):
        net.load_state_dict(state)
    state = net.state_dict()
    state["params/fc1.weight"] = np.zeros((2, 2))
    with pytest.raises(ValueError, match=r"params/fc1.weight.*\(2, 2\)"):
        net.load_state_dict(state)
    state = net.state_dict()
    state["params/extra"] = np.zeros(1)
    with pytest.raises(KeyError, match="params/extra"):
        net.load_state_dict(state)


def test_get_config_is_json_and_describes_the_model():
    config = build(MLP).get_config()
    assert json.loads(json.dumps(config)) == config
    assert [layer["name"] for layer in config["layers"]] == ["fc1", "relu_1", "fc2"]
    assert config["layers"][0]["output_shape"] == [8]
    assert config["losses"] == [
        {"output": "fc2", "scale": 1.0, "type": "CrossEntropy", "args": {"label_smoothing": 0.0}}
    ]
    assert [layer["inputs"] for layer in config["layers"]] == [["x"], ["fc1"], ["relu_1"]]
    assert config["optimizer"]["args"] == {
        "lr": 0.1,
        "momentum": 0.9,
        "weight_decay": 0.01,
        "nesterov": False,
        "clip_norm": None,
        "clip_value": None,
    }
    assert config["schedule"] is None


def test_model_without_loss_runs_forward_backward_but_not_loss(rng):
    net = build("model NoLoss { input [4] Linear(2) }")
    x = rng.standard_normal((3, 4))
    assert net.forward(x).shape == (3, 2)
    assert net.backward(np.ones((3, 2))).shape == (3, 4)
    with pytest.raises(RuntimeError, match="has no loss"):
        net.loss(x, np.zeros(3, int))
    with pytest.raises(RuntimeError, match="has no loss"):
        net.train_step(x, np.zeros(3, int))
    with pytest.raises(RuntimeError, match="has no loss"):
        net.backward()


def test_default_optimizer_is_sgd_lr_001():
    net = build("model D { input [2] Linear(2) loss MSE }")
    assert net.get_config()["optimizer"] == {
        "type": "SGD",
        "args": {
            "lr": 0.01,
            "momentum": 0.0,
            "weight_decay": 0.0,
            "nesterov": False,
            "clip_norm": None,
            "clip_value": None,
        },
    }
    assert net.lr == 0.01


def test_bad_inputs_get_clear_errors(batch):
    x, y = batch
    net = build(MLP)
    with pytest.raises(ValueError, match=r"expected \(batch, 6\), got \(5, 5\)"):
        net.forward(x[:, :5])
    with pytest.raises(ValueError, match="expected 5 labels"):
        net.loss(x, y[:4])
    with pytest.raises(ValueError, match="out of range"):
        net.loss(x, np.array([0, 1, 2, 3, 0]))
    with pytest.raises(RuntimeError, match="needs a forward"):
        build(MLP).backward()


def test_mse_loss_value(rng):
    net = build("model M { input [3] Linear(2) loss MSE }")
    x, t = rng.standard_normal((4, 3)), rng.standard_normal((4, 2))
    assert np.isclose(net.loss(x, t), np.mean((net.forward(x) - t) ** 2))


def test_several_models_in_one_file():
    import nncompile

    module = nncompile.load("model A { input [2] Linear(1) }\nmodel B { input [3] Linear(2) }")
    assert module.A(seed=0).params["linear_1.weight"].shape == (2, 1)
    assert module.B(seed=0).params["linear_1.weight"].shape == (3, 2)


def test_hyperparameters_changed_between_steps_take_effect(batch):
    x, y = batch
    plain = MLP.replace("SGD(lr=0.1, momentum=0.9, weight_decay=0.01)", "SGD(lr=0.1)")
    net, reference = build(plain), build(MLP)
    net.momentum, net.weight_decay = 0.9, 0.01
    for _ in range(3):
        assert net.train_step(x, y) == reference.train_step(x, y)
    for name in net.params:
        np.testing.assert_array_equal(net.params[name], reference.params[name])


def test_deepcopy_and_pickle_give_models_that_train_identically(batch, monkeypatch):
    import copy
    import pickle

    x, y = batch
    net = build(MLP)
    net.train_step(x, y)
    copies = [copy.deepcopy(net), copy.copy(net)]
    # pickle finds a class through its module; the compiled module exists only in memory here.
    module = types.ModuleType(type(net).__module__)
    setattr(module, type(net).__qualname__, type(net))
    monkeypatch.setitem(sys.modules, module.__name__, module)
    copies.append(pickle.loads(pickle.dumps(net)))
    expected = [net.train_step(x, y) for _ in range(3)]
    for clone in copies:
        assert [clone.train_step(x, y) for _ in range(3)] == expected
        assert np.shares_memory(clone.params["fc1.weight"], clone._flat_params)
        for name in net.params:
            np.testing.assert_array_equal(clone.params[name], net.params[name])
