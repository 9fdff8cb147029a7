"""Training v2 (issue 12) against PyTorch in float64: the optimizers AdamW and RMSprop, SGD's Nesterov momentum, Adam's
AMSGrad and gradient clipping (parameters after 5 steps); every schedule over 30 epochs of fit (the lr of each epoch
and the parameters at the end); resuming a schedule from a saved state; callbacks; sample weights; label smoothing;
predict_proba."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import build, readme_blocks

import nncompile

torch.set_num_threads(1)

# A small MLP whose torch twin is written out by hand: tanh(x·W1 + b1)·W2 + b2 (our Linear weights are (in, out)).
MLP = """
model Net {{
    input [5]
    Linear(6)
    TanH
    Linear(3)
    loss {loss}
    optimizer {optimizer}
    {schedule}
}}
"""
NAMES = ("linear_1.weight", "linear_1.bias", "linear_2.weight", "linear_2.bias")


def mlp(optimizer, schedule="", loss="MSE", seed=0):
    return build(MLP.format(optimizer=optimizer, schedule=schedule, loss=loss), seed=seed)


def torch_twin(net):
    return [torch.tensor(net.params[name].copy(), requires_grad=True) for name in NAMES]


def torch_forward(leaves, x):
    w1, b1, w2, b2 = leaves
    return torch.tanh(torch.as_tensor(x) @ w1 + b1) @ w2 + b2


def assert_params_match(net, leaves, rtol=1e-9):
    for name, leaf in zip(NAMES, leaves):
        np.testing.assert_allclose(net.params[name], leaf.detach().numpy(), rtol=rtol, atol=1e-13, err_msg=name)


# ---- optimizers and clipping: parameters after 5 steps ----------------------------------------------------------

OPTIMIZERS = {
    "SGD(lr=0.1, momentum=0.9, nesterov=true)": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True),
    "SGD(lr=0.05, momentum=0.8, weight_decay=0.1, nesterov=true)": lambda p: torch.optim.SGD(
        p, lr=0.05, momentum=0.8, weight_decay=0.1, nesterov=True
    ),
    "Adam(lr=0.01, amsgrad=true)": lambda p: torch.optim.Adam(p, lr=0.01, amsgrad=True),
    "Adam(lr=0.02, beta1=0.5, weight_decay=0.1, amsgrad=true)": lambda p: torch.optim.Adam(
        p, lr=0.02, betas=(0.5, 0.999), weight_decay=0.1, amsgrad=True
    ),
    "AdamW": lambda p: torch.optim.AdamW(p),
    "AdamW(lr=0.01, beta2=0.9, eps=1e-6, weight_decay=0.2)": lambda p: torch.optim.AdamW(
        p, lr=0.01, betas=(0.9, 0.9), eps=1e-6, weight_decay=0.2
    ),
    "AdamW(lr=0.01, weight_decay=0.1, amsgrad=true)": lambda p: torch.optim.AdamW(
        p, lr=0.01, weight_decay=0.1, amsgrad=True
    ),
    "RMSprop": lambda p: torch.optim.RMSprop(p),
    "RMSprop(lr=0.005, alpha=0.9, eps=1e-6, weight_decay=0.1, momentum=0.5)": lambda p: torch.optim.RMSprop(
        p, lr=0.005, alpha=0.9, eps=1e-6, weight_decay=0.1, momentum=0.5
    ),
    "RMSprop(lr=0.01, centered=true)": lambda p: torch.optim.RMSprop(p, lr=0.01, centered=True),
    "RMSprop(lr=0.003, momentum=0.9, weight_decay=0.01, centered=true)": lambda p: torch.optim.RMSprop(
        p, lr=0.003, momentum=0.9, weight_decay=0.01, centered=True
    ),
}
# Clipping on every optimizer: (our optimizer, torch's, clip_norm or None, clip_value or None).
CLIPPED = {
    "SGD(lr=0.1, clip_norm=0.5)": (lambda p: torch.optim.SGD(p, lr=0.1), 0.5, None),
    "SGD(lr=0.1, momentum=0.9, nesterov=true, clip_value=0.05)": (
        lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True),
        None,
        0.05,
    ),
    "Adam(lr=0.01, weight_decay=0.1, clip_norm=0.3)": (
        lambda p: torch.optim.Adam(p, lr=0.01, weight_decay=0.1),
        0.3,
        None,
    ),
    "AdamW(lr=0.01, clip_value=0.02)": (lambda p: torch.optim.AdamW(p, lr=0.01), None, 0.02),
    "RMSprop(lr=0.01, momentum=0.5, clip_norm=0.2)": (
        lambda p: torch.optim.RMSprop(p, lr=0.01, momentum=0.5),
        0.2,
        None,
    ),
    "RMSprop(lr=0.01, centered=true, clip_value=0.1)": (
        lambda p: torch.optim.RMSprop(p, lr=0.01, centered=True),
        None,
        0.1,
    ),
}


def run_five_steps(optimizer, make_torch, clip_norm=None, clip_value=None):
    net = mlp(optimizer, seed=3)
    leaves = torch_twin(net)
    torch_optimizer = make_torch(leaves)
    rng = np.random.default_rng(7)
    clipped = False
    for _ in range(5):
        # Large targets, so that clipping has work to do.
        x, t = rng.standard_normal((8, 5)), 5 * rng.standard_normal((8, 3))
        net.train_step(x, t)
        torch_optimizer.zero_grad()
        torch.nn.functional.mse_loss(torch_forward(leaves, x), torch.as_tensor(t)).backward()
        if clip_norm is not None:
            clipped |= bool(torch.nn.utils.clip_grad_norm_(leaves, clip_norm) > clip_norm)
        if clip_value is not None:
            clipped |= any(bool(leaf.grad.abs().max() > clip_value) for leaf in leaves)
            torch.nn.utils.clip_grad_value_(leaves, clip_value)
        torch_optimizer.step()
    assert_params_match(net, leaves)
    assert net.step_count == 5
    return clipped


@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
def test_optimizer_matches_torch_after_five_steps(optimizer):
    run_five_steps(optimizer, OPTIMIZERS[optimizer])


@pytest.mark.parametrize("optimizer", list(CLIPPED))
def test_gradient_clipping_matches_torch_after_five_steps(optimizer):
    make_torch, clip_norm, clip_value = CLIPPED[optimizer]
    assert run_five_steps(optimizer, make_torch, clip_norm, clip_value), "the clipping never acted"


def test_clipping_leaves_the_clipped_gradients_in_grads_as_torch_does(rng):
    net = mlp("SGD(lr=0.1, clip_norm=0.25)")
    x, t = rng.standard_normal((8, 5)), 10 * rng.standard_normal((8, 3))
    net.zero_grad()
    net.loss(x, t)
    net.backward()
    before = np.sqrt(sum((g**2).sum() for g in net.grads.values()))
    net.step()
    after = np.sqrt(sum((g**2).sum() for g in net.grads.values()))
    assert before > 0.25 and after == pytest.approx(0.25 * before / (before + 1e-6), rel=1e-12)


def test_options_off_generate_no_code_for_them():
    """A model without the new options has the update it had: no clipping, Nesterov or AMSGrad code, no schedule."""
    code = nncompile.compile_source(MLP.format(loss="MSE", optimizer="SGD(lr=0.1, momentum=0.9)", schedule=""))
    model = code.split("\nclass Net(")[1]
    update = model.split("def _update(self):")[1].split("    def ")[0]
    assert "clip" not in update and "Nesterov:" not in update and "np.sqrt" not in update
    assert "_scheduled_lr" not in model and "schedule_epoch" not in model and "_flat_work" not in model
    net = mlp("Adam")
    assert set(net._flat_slots) == {"exp_avg", "exp_avg_sq"} and "base_lr" not in net.state_dict()


def test_hyperparameters_of_the_new_optimizers_are_checked_attributes():
    net = mlp("RMSprop(momentum=0.9, centered=true, clip_norm=1.0)")
    assert (net.alpha, net.momentum, net.clip_norm) == (0.99, 0.9, 1.0)
    with pytest.raises(ValueError, match="alpha must be in"):
        net.alpha = 1.5
    with pytest.raises(ValueError, match="clip_norm must be positive"):
        net.clip_norm = 0
    assert not hasattr(net, "centered") and not hasattr(mlp("SGD"), "clip_norm")


# ---- schedules: 30 epochs of fit against torch.optim.lr_scheduler -------------------------------------------------

SCHEDULES = {
    "StepLR(step_size=7)": lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=7),
    "StepLR(step_size=4, gamma=0.5)": lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=4, gamma=0.5),
    "MultiStepLR(milestones=[5, 12, 20], gamma=0.3)": lambda o: torch.optim.lr_scheduler.MultiStepLR(
        o, milestones=[5, 12, 20], gamma=0.3
    ),
    "ExponentialLR(gamma=0.9)": lambda o: torch.optim.lr_scheduler.ExponentialLR(o, gamma=0.9),
    "CosineAnnealingLR(T_max=10)": lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=10),
    "CosineAnnealingLR(T_max=12, eta_min=0.001)": lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(
        o, T_max=12, eta_min=0.001
    ),
    "LinearLR": lambda o: torch.optim.lr_scheduler.LinearLR(o),
    "LinearLR(start_factor=0.1, end_factor=0.5, total_iters=10)": lambda o: torch.optim.lr_scheduler.LinearLR(
        o, start_factor=0.1, end_factor=0.5, total_iters=10
    ),
}


def data(samples=24, seed=5):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((samples, 5)), rng.standard_normal((samples, 3))


@pytest.mark.parametrize("schedule", list(SCHEDULES))
def test_schedule_matches_torch_over_30_epochs_of_fit(schedule):
    net = mlp("SGD(lr=0.1, momentum=0.9)", f"schedule {schedule}", seed=1)
    leaves = torch_twin(net)
    optimizer = torch.optim.SGD(leaves, lr=0.1, momentum=0.9)
    scheduler = SCHEDULES[schedule](optimizer)
    x, t = data()
    history = net.fit(x, t, epochs=30, batch_size=8, shuffle=False, verbose=False)
    torch_lrs = []
    for _ in range(30):
        torch_lrs.append(optimizer.param_groups[0]["lr"])
        for start in range(0, 24, 8):
            optimizer.zero_grad()
            out = torch_forward(leaves, x[start : start + 8])
            torch.nn.functional.mse_loss(out, torch.as_tensor(t[start : start + 8])).backward()
            optimizer.step()
        scheduler.step()
    assert history["lr"] == torch_lrs  # to the last bit
    assert net.lr == optimizer.param_groups[0]["lr"] and net.schedule_epoch == 30
    assert_params_match(net, leaves)


def test_schedule_with_adam_and_a_manual_loop_using_schedule_step(rng):
    """schedule_step() is scheduler.step() for a loop of one's own; a changed lr carries on, as in PyTorch."""
    net = mlp("Adam(lr=0.01)", "schedule StepLR(step_size=2, gamma=0.5)")
    leaves = torch_twin(net)
    optimizer = torch.optim.Adam(leaves, lr=0.01)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)
    for epoch in range(6):
        if epoch == 3:
            net.lr = optimizer.param_groups[0]["lr"] = 0.02
        x, t = rng.standard_normal((8, 5)), rng.standard_normal((8, 3))
        net.train_step(x, t)
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(torch_forward(leaves, x), torch.as_tensor(t)).backward()
        optimizer.step()
        net.schedule_step()
        scheduler.step()
        assert net.lr == optimizer.param_groups[0]["lr"]
    assert_params_match(net, leaves)


def test_linear_warm_up_starts_at_a_third_of_the_lr_when_the_model_is_made():
    net = mlp("SGD(lr=0.3)", "schedule LinearLR")
    assert (net.base_lr, net.lr, net.schedule_epoch) == (0.3, 0.3 * (1 / 3), 0)
    state = net.state_dict()
    assert state["optimizer/schedule_epoch"] == 0 and state["optimizer/base_lr"] == 0.3


def test_a_schedule_may_anneal_lr_to_zero_and_the_state_still_loads():
    net = mlp("SGD(lr=0.1)", "schedule CosineAnnealingLR(T_max=2)")
    x, t = data()
    history = net.fit(x, t, epochs=3, batch_size=8, verbose=False)
    assert history["lr"] == [0.1, 0.05, 0.0] and net.lr == pytest.approx(0.05)
    for _ in range(3):
        net.schedule_step()  # epoch 6: the lowest point again
    clone = mlp("SGD(lr=0.1)", "schedule CosineAnnealingLR(T_max=2)")
    clone.load_state_dict(net.state_dict())
    assert (clone.lr, clone.schedule_epoch) == (0.0, 6)
    with pytest.raises(ValueError, match="lr must not be negative"):
        clone.lr = -1.0
    with pytest.raises(ValueError, match="lr must be positive"):
        mlp("SGD(lr=0.1)").lr = 0.0  # without a schedule lr stays positive, as the compiler checks it


def test_without_a_schedule_there_is_no_lr_history_and_schedule_step_says_why():
    net = mlp("SGD(lr=0.1)")
    x, t = data()
    assert "lr" not in net.fit(x, t, epochs=1, verbose=False)
    with pytest.raises(RuntimeError, match="has no schedule; add e.g. 'schedule StepLR"):
        net.schedule_step()


# ---- resuming a schedule ------------------------------------------------------------------------------------------

RESUMED = ["CosineAnnealingLR(T_max=10)", "LinearLR(total_iters=10)", "StepLR(step_size=3, gamma=0.5)"]


@pytest.mark.parametrize("schedule", RESUMED)
def test_resuming_a_schedule_from_a_saved_state_equals_the_uninterrupted_run(schedule, tmp_path):
    x, t = data()
    source = f"schedule {schedule}"
    whole = mlp("Adam(lr=0.01)", source, seed=2)
    expected = whole.fit(x, t, epochs=12, batch_size=8, seed=4, verbose=False)

    first = mlp("Adam(lr=0.01)", source, seed=2)
    path = tmp_path / "epoch7.npz"
    # A callback saves at the end of epoch 7 (index 6): the schedule has stepped already, as for the next epoch.
    saved_at = lambda epoch, logs: epoch == 6 and first.save(path)
    first.fit(x, t, epochs=12, batch_size=8, seed=4, verbose=False, callbacks=[saved_at])
    resumed = mlp("Adam(lr=0.01)", source, seed=99)
    resumed.load(path)
    assert resumed.schedule_epoch == 7
    rest = resumed.fit(x, t, epochs=12, batch_size=8, seed=4, verbose=False, initial_epoch=7)
    assert rest["lr"] == expected["lr"][7:] and rest["loss"] == expected["loss"][7:]
    for name in whole.params:
        np.testing.assert_array_equal(resumed.params[name], whole.params[name])
    assert (resumed.lr, resumed.step_count) == (whole.lr, whole.step_count)

    # The same with fit stopped after 7 epochs and save()/load() between.
    stopped = mlp("Adam(lr=0.01)", source, seed=2)
    stopped.fit(x, t, epochs=7, batch_size=8, seed=4, verbose=False)
    stopped.save(tmp_path / "stopped.npz")
    again = mlp("Adam(lr=0.01)", source, seed=0)
    again.load(tmp_path / "stopped.npz")
    again.fit(x, t, epochs=12, batch_size=8, seed=4, verbose=False, initial_epoch=7)
    for name in whole.params:
        np.testing.assert_array_equal(again.params[name], whole.params[name])


# ---- callbacks ----------------------------------------------------------------------------------------------------


def test_callbacks_see_each_epochs_logs_and_stop_training_where_asked():
    net = mlp("SGD(lr=0.05)", "schedule ExponentialLR(gamma=0.5)")
    x, t = data()
    seen, lrs = [], []

    def record(epoch, logs):
        seen.append((epoch, logs))
        lrs.append(net.lr)
        logs["loss"] = None  # a callback's logs are its own copy

    def stop(epoch, logs):
        if epoch == 4:
            net.stop_training = True

    history = net.fit(x, t, epochs=20, batch_size=8, verbose=False, callbacks=[record, stop], validation_split=0.25)
    assert [epoch for epoch, _ in seen] == [0, 1, 2, 3, 4] and len(history["loss"]) == 5
    assert set(seen[0][1]) == {"loss", "val_loss", "lr"} and history["loss"][0] is not None
    assert [logs["lr"] for _, logs in seen] == history["lr"] == [0.05 * 0.5**e for e in range(5)]
    # The schedule steps when the epoch ends, before the callbacks: they see the next epoch's lr on the model.
    assert lrs == [0.05 * 0.5 ** (e + 1) for e in range(5)]
    # The next fit starts with stop_training reset, and stops only where asked again.
    assert len(net.fit(x, t, epochs=3, verbose=False)["loss"]) == 3 and net.stop_training is False


def test_a_callback_stopping_at_the_first_epoch_and_with_initial_epoch(capsys):
    net = mlp("SGD(lr=0.05)")
    x, t = data()

    def stop(epoch, logs):
        net.stop_training = epoch >= 3

    history = net.fit(x, t, epochs=10, initial_epoch=3, callbacks=[stop])
    assert len(history["loss"]) == 1
    assert "stopped by a callback after epoch 4" in capsys.readouterr().out


@pytest.mark.parametrize("callbacks", [print, [1], "fn", [lambda e, logs: None, None]])
def test_callbacks_must_be_a_list_of_functions(callbacks):
    net = mlp("SGD")
    with pytest.raises(ValueError, match="callbacks must be a list of functions"):
        net.fit(*data(), callbacks=callbacks, verbose=False)


# ---- sample weights -------------------------------------------------------------------------------------------------

LINEAR = """
model Lin {{
    input [4]
    Linear({out})
    {activation}
    loss {loss}
    optimizer SGD(lr=0.1)
}}
"""


def loss_case(loss, rng, batch=6):
    """(our loss, its output width, a Sigmoid line or '', targets, torch per-sample losses of the output z)."""
    f = torch.nn.functional
    if loss.startswith("CrossEntropy"):
        smoothing = float(loss.split("=")[1].rstrip(")")) if "=" in loss else 0.0
        labels = rng.integers(0, 3, batch)

        def per_sample(z, y):
            return f.cross_entropy(z, torch.as_tensor(y), reduction="none", label_smoothing=smoothing)

        return 3, "", labels, per_sample
    if loss.startswith("CEprobs"):
        probabilities = rng.dirichlet(np.ones(3), batch)
        smoothing = 0.2

        def per_sample(z, y):
            return f.cross_entropy(z, torch.as_tensor(y), reduction="none", label_smoothing=smoothing)

        return 3, "", probabilities, per_sample
    t = rng.uniform(0, 1, (batch, 2))
    elementwise = {
        "MSE": lambda z, y: f.mse_loss(z, y, reduction="none"),
        "L1": lambda z, y: f.l1_loss(z, y, reduction="none"),
        "Huber(delta=0.5)": lambda z, y: f.huber_loss(z, y, reduction="none", delta=0.5),
        "BCEWithLogits": lambda z, y: f.binary_cross_entropy_with_logits(z, y, reduction="none"),
        "BCE": lambda z, y: f.binary_cross_entropy(torch.sigmoid(z), y, reduction="none"),
    }[loss]
    return 2, "Sigmoid" if loss == "BCE" else "", t, lambda z, y: elementwise(z, torch.as_tensor(y)).mean(dim=1)


WEIGHTED_LOSSES = ["MSE", "L1", "Huber(delta=0.5)", "BCEWithLogits", "BCE", "CrossEntropy", "CrossEntropy(x=0.3)"]


def linear_model(loss, out, activation):
    name = "CrossEntropy(label_smoothing=0.2)" if loss == "CEprobs" else loss.replace("(x=", "(label_smoothing=")
    return build(LINEAR.format(out=out, activation=activation, loss=name), seed=4)


@pytest.mark.parametrize("loss", [*WEIGHTED_LOSSES, "CEprobs"])
def test_weighted_loss_and_gradients_match_torch(loss, rng):
    """mean(wᵢ·lᵢ), lᵢ the mean loss of sample i (Keras's rule), against torch's unreduced losses."""
    out, activation, target, per_sample = loss_case(loss, rng)
    net = linear_model(loss, out, activation)
    x, w = rng.standard_normal((6, 4)), rng.uniform(0, 2, 6)
    w[2] = 0
    weight, bias = (
        torch.tensor(net.params[k].copy(), requires_grad=True) for k in ("linear_1.weight", "linear_1.bias")
    )
    expected = (torch.as_tensor(w) * per_sample(torch.as_tensor(x) @ weight + bias, target)).mean()
    expected.backward()
    net.zero_grad()
    assert net.loss(x, target, sample_weight=w) == pytest.approx(expected.item(), rel=1e-12)
    net.backward()
    np.testing.assert_allclose(net.grads["linear_1.weight"], weight.grad.numpy(), rtol=1e-10, atol=1e-15)
    np.testing.assert_allclose(net.grads["linear_1.bias"], bias.grad.numpy(), rtol=1e-10, atol=1e-15)


@pytest.mark.parametrize("loss", [*WEIGHTED_LOSSES, "CEprobs"])
def test_weights_of_one_give_exactly_the_unweighted_loss_and_gradients(loss, rng):
    out, activation, target, _ = loss_case(loss, rng)
    net = linear_model(loss, out, activation)
    x = rng.standard_normal((6, 4))
    net.zero_grad()
    plain = net.loss(x, target)
    net.backward()
    grads = {k: g.copy() for k, g in net.grads.items()}
    net.zero_grad()
    assert net.loss(x, target, sample_weight=np.ones(6)) == plain
    net.backward()
    for name, grad in grads.items():
        np.testing.assert_array_equal(net.grads[name], grad)


def test_fit_with_weights_of_one_is_exactly_the_unweighted_fit():
    x, t = data(30)
    plain, weighted = mlp("Adam(lr=0.01)"), mlp("Adam(lr=0.01)")
    validation = (x[:6], t[:6])
    expected = plain.fit(x, t, epochs=4, batch_size=8, seed=1, verbose=False, validation_data=validation)
    history = weighted.fit(
        x,
        t,
        epochs=4,
        batch_size=8,
        seed=1,
        verbose=False,
        sample_weight=np.ones(30),
        validation_data=(*validation, np.ones(6)),
    )
    assert history == expected
    for name in plain.params:
        np.testing.assert_array_equal(weighted.params[name], plain.params[name])
    assert weighted.evaluate(x, t, sample_weight=np.ones(30)) == plain.evaluate(x, t)


def test_zero_weights_remove_samples_from_training():
    """Samples of weight 0 change nothing: replacing them by other data gives the very same training."""
    x, t = data(32)
    w = np.ones(32)
    w[::3] = 0
    other_x, other_t = x.copy(), t.copy()
    other_x[::3] = 7.0
    other_t[::3] = -3.0
    one, two = mlp("SGD(lr=0.05, momentum=0.9)"), mlp("SGD(lr=0.05, momentum=0.9)")
    first = one.fit(x, t, epochs=3, batch_size=8, seed=2, verbose=False, sample_weight=w)
    second = two.fit(other_x, other_t, epochs=3, batch_size=8, seed=2, verbose=False, sample_weight=w)
    for name in one.params:
        np.testing.assert_array_equal(one.params[name], two.params[name])
    np.testing.assert_allclose(first["loss"], second["loss"], rtol=1e-12)
    # The batch loss is mean(wᵢ·lᵢ) over the whole batch: the kept samples' mean loss times their share.
    kept = w > 0
    mean_kept = one.evaluate(x[kept], t[kept])["loss"]
    assert one.evaluate(x, t, sample_weight=w)["loss"] == pytest.approx(mean_kept * kept.mean(), rel=1e-12)


def test_sample_weight_with_validation_split_and_several_outputs(rng):
    net = build(
        """
        model Two {
            input [4]
            h = Linear(8) -> ReLU
            kind = h -> Linear(3)
            size = h -> Linear(1)
            output (kind, size)
            loss kind -> CrossEntropy
            loss size -> 0.5 * MSE
        }
        """
    )
    x = rng.standard_normal((20, 4))
    y = {"kind": rng.integers(0, 3, 20), "size": rng.standard_normal(20)}
    w = rng.uniform(0, 1, 20)
    history = net.fit(x, y, epochs=2, batch_size=5, verbose=False, sample_weight=w, validation_split=0.25)
    # The held-out fifth keeps its weights: val_loss is the weighted evaluation of the last 5 samples.
    held = {k: v[15:] for k, v in y.items()}
    assert history["val_loss"][-1] == pytest.approx(net.evaluate(x[15:], held, sample_weight=w[15:])["loss"])
    assert net.evaluate(x, y, sample_weight=np.ones(20)) == net.evaluate(x, y)
    terms = net.evaluate(x, y, sample_weight=w)
    assert terms["loss"] == pytest.approx(terms["kind_loss"] + 0.5 * terms["size_loss"], rel=1e-12)


def test_train_step_with_sample_weight_is_the_weighted_step(rng):
    x, t = rng.standard_normal((8, 5)), rng.standard_normal((8, 3))
    w = rng.uniform(0, 1, 8)
    stepped, by_hand = mlp("SGD(lr=0.1)"), mlp("SGD(lr=0.1)")
    loss = stepped.train_step(x, t, sample_weight=w)
    by_hand.zero_grad()
    assert by_hand.loss(x, t, sample_weight=w) == loss
    by_hand.backward()
    by_hand.step()
    for name in stepped.params:
        # Equal to round-off: train_step folds lr into backward (lr · dL/dz), step() multiplies the gradients by it.
        np.testing.assert_allclose(stepped.params[name], by_hand.params[name], rtol=1e-14, atol=1e-16)


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        (np.ones(23), r"sample_weight must hold one weight per sample, shape \(24,\), got \(23,\)"),
        (np.ones((24, 1)), "one weight per sample"),
        (np.full(24, -1.0), "must hold finite weights >= 0, got -1.0 for sample 0"),
        (np.r_[np.ones(5), np.nan, np.ones(18)], "got nan for sample 5"),
        (np.array(["a"] * 24), "must hold real numbers"),
    ],
)
def test_bad_sample_weights_are_refused(weights, message):
    net = mlp("SGD")
    x, t = data()
    with pytest.raises(ValueError, match=message):
        net.fit(x, t, sample_weight=weights, verbose=False)
    with pytest.raises(ValueError, match=message):
        net.evaluate(x, t, sample_weight=weights)
    assert net.step_count == 0


# ---- label smoothing and predict_proba ----------------------------------------------------------------------------


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.5, 1.0])
@pytest.mark.parametrize("targets", ["labels", "probabilities"])
def test_label_smoothing_matches_torch(smoothing, targets, rng):
    net = build(LINEAR.format(out=5, activation="", loss=f"CrossEntropy(label_smoothing={smoothing})"), seed=1)
    x = 3 * rng.standard_normal((7, 4))
    y = rng.integers(0, 5, 7) if targets == "labels" else rng.dirichlet(np.ones(5), 7)
    weight, bias = (
        torch.tensor(net.params[k].copy(), requires_grad=True) for k in ("linear_1.weight", "linear_1.bias")
    )
    expected = torch.nn.functional.cross_entropy(
        torch.as_tensor(x) @ weight + bias, torch.as_tensor(y), label_smoothing=smoothing
    )
    expected.backward()
    net.zero_grad()
    assert net.loss(x, y) == pytest.approx(expected.item(), rel=1e-12)
    net.backward()
    np.testing.assert_allclose(net.grads["linear_1.weight"], weight.grad.numpy(), rtol=1e-10, atol=1e-15)
    np.testing.assert_allclose(net.grads["linear_1.bias"], bias.grad.numpy(), rtol=1e-10, atol=1e-15)


def test_predict_proba_for_each_class_loss(rng):
    x = 4 * rng.standard_normal((9, 4))
    softmax = build(LINEAR.format(out=3, activation="", loss="CrossEntropy"))
    logits = torch.as_tensor(softmax.predict(x))
    np.testing.assert_allclose(softmax.predict_proba(x), torch.softmax(logits, 1).numpy(), rtol=1e-13, atol=1e-300)
    sigmoid = build(LINEAR.format(out=2, activation="", loss="BCEWithLogits"))
    sigmoid.params["linear_1.weight"][...] *= 300  # logits far out on both sides: no overflow, exact tails
    logits = torch.as_tensor(sigmoid.predict(x))
    assert np.abs(logits.numpy()).max() > 100
    np.testing.assert_allclose(sigmoid.predict_proba(x), torch.sigmoid(logits).numpy(), rtol=1e-13, atol=1e-300)
    identity = build(LINEAR.format(out=2, activation="Sigmoid", loss="BCE"))
    np.testing.assert_array_equal(identity.predict_proba(x), identity.predict(x))
    with pytest.raises(
        RuntimeError, match=r"the loss \(MSE\) names no classes; probabilities come from a CrossEntropy"
    ):
        build(LINEAR.format(out=2, activation="", loss="MSE")).predict_proba(x)
    with pytest.raises(RuntimeError, match="has no loss"):
        build("model M { input [4] Linear(2) }").predict_proba(x)


def test_predict_proba_with_several_outputs_gives_the_class_outputs(rng):
    net = build(
        """
        model Two {
            input [4]
            h = Linear(8) -> ReLU
            kind = h -> Linear(3)
            size = h -> Linear(1)
            output (kind, size)
            loss kind -> CrossEntropy
            loss size -> MSE
        }
        """,
        dtype="float32",
    )
    x = rng.standard_normal((5, 4)).astype(np.float32)
    probabilities = net.predict_proba(x)
    assert list(probabilities) == ["kind"] and probabilities["kind"].dtype == np.float32
    np.testing.assert_allclose(probabilities["kind"].sum(axis=1), 1, rtol=1e-6)


def test_repr_says_what_the_model_is():
    net = mlp("SGD")
    assert repr(net) == "<Net: input [5] -> output [3], 57 parameters, training mode>"
    net.eval()
    assert repr(net).endswith("57 parameters, inference mode>")
    two = build(
        "model Two { input a [2] input b [3] h = (a, b) -> Concat  p = h -> Linear(1)  q = h -> Linear(2) output (p, q) }"
    )
    assert repr(two) == "<Two: inputs a [2], b [3] -> outputs p [1], q [2], 18 parameters, training mode>"


def test_readme_schedules_section_runs_as_written(tmp_path):
    """The README's 'Schedules, callbacks and probabilities': its model (saved as digits_scheduled.nn), then its
    script, prints exactly what the section shows."""
    (_, model), (language, code), (_, output) = readme_blocks("### Schedules, callbacks and probabilities")
    assert language == "python" and "schedule CosineAnnealingLR" in model and "callbacks=[report]" in code
    (tmp_path / "digits_scheduled.nn").write_text(model + "\n", encoding="utf-8")
    (tmp_path / "scheduled.py").write_text(code + "\n", encoding="utf-8")
    result = subprocess.run([sys.executable, "scheduled.py"], capture_output=True, text=True, check=True, cwd=tmp_path)
    assert result.stdout.rstrip("\n") == output
