"""The generated training runtime: fit / evaluate / predict, their progress output and their error handling."""

from __future__ import annotations

import os
import re
import signal
import sys
import warnings

import numpy as np
import pytest
from conftest import ROOT, build, manual_fit

import nncompile

NET = """
model Net {
    input [4]
    fc1 = Linear(16)
    ReLU
    fc2 = Linear(3)
    loss CrossEntropy
    optimizer SGD(lr=0.1, momentum=0.9)
}
"""

REGRESSOR = """
model Reg {
    input [4]
    Linear(8)
    Tanh
    Linear(2)
    loss MSE
    optimizer SGD(lr=0.05)
}
"""


@pytest.fixture
def data():
    """100 samples of 3 Gaussian blobs in 4 dimensions: an easy, quick classification task."""
    rng = np.random.default_rng(5)
    y = rng.integers(0, 3, 100)
    x = rng.standard_normal((100, 4)) + 2.0 * np.eye(3, 4)[y]
    return x, y


def state(net):
    return {key: value.copy() for key, value in net.state_dict().items()}


def assert_same_state(a, b):
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


# ---- history and the training loop --------------------------------------------------------------------------


def test_history_holds_per_epoch_lists_of_the_metrics(data):
    x, y = data
    history = build(NET).fit(x, y, epochs=3, seed=0, verbose=False)
    assert list(history) == ["loss", "accuracy"]
    assert all(len(values) == 3 for values in history.values())
    assert history["loss"][-1] < history["loss"][0]
    assert history["accuracy"][-1] > 0.8
    history = build(NET).fit(x, y, epochs=2, seed=0, validation_split=0.2, verbose=False)
    assert list(history) == ["loss", "accuracy", "val_loss", "val_accuracy"]
    assert all(len(values) == 2 and all(isinstance(v, float) for v in values) for values in history.values())


def test_history_of_a_loss_without_accuracy_has_only_losses(rng):
    x, t = rng.standard_normal((30, 4)), rng.standard_normal((30, 2))
    net = build(REGRESSOR)
    assert list(net.fit(x, t, epochs=2, seed=0, verbose=False)) == ["loss"]
    history = net.fit(x, t, epochs=2, seed=0, validation_data=(x[:5], t[:5]), verbose=False)
    assert list(history) == ["loss", "val_loss"]
    assert list(net.evaluate(x, t)) == ["loss"]
    assert net.evaluate(x, t)["loss"] == pytest.approx(np.mean((net.predict(x) - t) ** 2))


def test_fit_is_train_step_over_seeded_shuffled_batches_with_the_last_one_partial(data):
    x, y = data
    net, reference = build(NET), build(NET)
    history = net.fit(x, y, epochs=3, batch_size=32, seed=7, verbose=False)
    losses, accuracies = manual_fit(reference, x, y, epochs=3, batch_size=32, seed=7)
    assert net.step_count == reference.step_count == 3 * 4  # 32 + 32 + 32 + 4 samples
    assert_same_state(state(net), state(reference))
    np.testing.assert_allclose(history["loss"], losses, rtol=1e-12)
    assert history["accuracy"] == accuracies


def test_shuffling_is_reproducible_from_the_seed(data):
    x, y = data
    a, b, c = build(NET), build(NET), build(NET)
    assert a.fit(x, y, epochs=2, seed=3, verbose=False) == b.fit(x, y, epochs=2, seed=3, verbose=False)
    assert_same_state(state(a), state(b))
    c.fit(x, y, epochs=2, seed=4, verbose=False)
    assert not np.array_equal(a.params["fc1.weight"], c.params["fc1.weight"])
    unseeded = build(NET)
    assert len(unseeded.fit(x, y, epochs=2, verbose=False)["loss"]) == 2


def test_without_shuffle_batches_are_taken_in_order(data):
    x, y = data
    net, reference = build(NET), build(NET)
    net.fit(x, y, epochs=2, batch_size=40, shuffle=False, verbose=False)
    for _ in range(2):
        for start in (0, 40, 80):
            reference.train_step(x[start : start + 40], y[start : start + 40])
    assert_same_state(state(net), state(reference))


def test_a_saved_run_resumes_exactly_with_initial_epoch(data, tmp_path):
    x, y = data
    whole = build(NET)
    history = whole.fit(x, y, epochs=4, seed=11, verbose=False)
    first = build(NET)
    first_half = first.fit(x, y, epochs=2, seed=11, verbose=False)
    first.save(tmp_path / "half.npz")
    resumed = build(NET, seed=99)
    resumed.load(tmp_path / "half.npz")
    second_half = resumed.fit(x, y, epochs=4, initial_epoch=2, seed=11, verbose=False)
    assert first_half["loss"] + second_half["loss"] == history["loss"]
    assert_same_state(state(resumed), state(whole))


def test_validation_split_holds_out_the_last_fraction_before_shuffling(data):
    x, y = data
    split, explicit = build(NET), build(NET)
    history = split.fit(x, y, epochs=2, seed=1, validation_split=0.2, verbose=False)
    expected = explicit.fit(x[:80], y[:80], epochs=2, seed=1, validation_data=(x[80:], y[80:]), verbose=False)
    assert history == expected
    assert_same_state(state(split), state(explicit))
    assert history["val_loss"][-1] == pytest.approx(split.evaluate(x[80:], y[80:])["loss"], rel=1e-12)
    assert history["val_accuracy"][-1] == split.evaluate(x[80:], y[80:])["accuracy"]
    # As in Keras, the training part is floor(n * (1 - split)) samples: 101 * 0.75 = 75.75 -> 75 train, 26 held out.
    x101, y101 = np.concatenate([x, x[:1]]), np.concatenate([y, y[:1]])
    odd, reference = build(NET), build(NET)
    odd.fit(x101, y101, epochs=1, seed=2, validation_split=0.25, verbose=False)
    reference.fit(x101[:75], y101[:75], epochs=1, seed=2, verbose=False)
    assert_same_state(state(odd), state(reference))


def scripted_validation(net, losses):
    """Make fit's validation report the given val_loss values, one per epoch."""
    values = iter(losses)
    net._evaluate_checked = lambda x, target, batch_size, weight=None: {"loss": next(values), "accuracy": 0.5}


def test_early_stopping_restores_the_best_epochs_parameters(data, capsys):
    x, y = data
    net = build(NET)
    scripted_validation(net, [1.0, 0.8, 0.9, 0.85, 0.95, 0.5, 0.4])
    history = net.fit(x, y, epochs=7, seed=5, validation_split=0.2, patience=3)
    # Best at epoch 2; epochs 3, 4 and 5 bring no improvement, so training stops after epoch 5.
    assert history["val_loss"] == [1.0, 0.8, 0.9, 0.85, 0.95]
    reference = build(NET)
    reference.fit(x[:80], y[:80], epochs=2, seed=5, verbose=False)
    for name in net.params:
        np.testing.assert_array_equal(net.params[name], reference.params[name])
    assert net.step_count == 5 * 3  # the optimizer state is that of the last epoch, not restored
    assert "restored the parameters of epoch 2, the lowest val_loss (0.8000)" in capsys.readouterr().out


def test_early_stopping_without_restore_keeps_the_last_parameters(data):
    x, y = data
    net, reference = build(NET), build(NET)
    scripted_validation(net, [1.0, 1.1, 1.2, 0.1])
    history = net.fit(x, y, epochs=4, seed=5, validation_split=0.2, patience=2, restore_best=False, verbose=False)
    assert len(history["loss"]) == 3
    reference.fit(x[:80], y[:80], epochs=3, seed=5, verbose=False)
    assert_same_state(state(net), state(reference))


def test_early_stopping_on_real_overfitting(data):
    """Validation labels that disagree with the training labels: val_loss rises as the training loss falls."""
    x, y = data
    net = build(NET)
    history = net.fit(x, y, epochs=30, seed=0, validation_data=(x[:30], (y[:30] + 1) % 3), patience=2, verbose=False)
    best = int(np.argmin(history["val_loss"]))
    assert len(history["val_loss"]) == best + 3 < 30
    assert net.evaluate(x[:30], (y[:30] + 1) % 3)["loss"] == pytest.approx(history["val_loss"][best], rel=1e-12)


# ---- progress output ---------------------------------------------------------------------------------------------

# fit(x, y, epochs=2, validation_split=0.2) on 100 samples: 80 for training, 3 batches of up to 32.
NUMBER = r"\d\.\d{4}"
TIME = r"(\d+ ms|\d+\.\d s)"
LINE = rf"epoch \d/2  3/3  loss {NUMBER}  accuracy {NUMBER}  val_loss {NUMBER}  val_accuracy {NUMBER}  {TIME}"
BAR = rf"epoch \d/2  \[=+\.*\] 1/3  loss {NUMBER}  accuracy {NUMBER}  {TIME}"


def test_verbose_prints_one_plain_line_per_epoch_when_not_a_terminal(data, capsys):
    x, y = data
    build(NET).fit(x, y, epochs=2, seed=0, validation_split=0.2)
    out = capsys.readouterr().out
    assert "\r" not in out
    lines = out.splitlines()
    assert len(lines) == 2
    for number, line in enumerate(lines, 1):
        assert re.fullmatch(LINE.replace(r"\d/2", f"{number}/2"), line), line


def test_verbose_redraws_a_progress_bar_in_place_on_a_terminal(data, capsys, monkeypatch):
    x, y = data
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    build(NET).fit(x, y, epochs=2, seed=0, validation_split=0.2)
    out = capsys.readouterr().out
    lines = out.split("\n")
    assert len(lines) == 3 and lines[-1] == ""
    for line in lines[:2]:
        drawn = line.split("\r")[1:]
        assert re.fullmatch(BAR, drawn[0]), drawn
        assert re.fullmatch(LINE, drawn[-1].rstrip()), drawn


def test_verbose_false_prints_nothing(data, capsys, monkeypatch):
    x, y = data
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    net = build(NET)
    scripted_validation(net, [1.0, 2.0, 3.0])
    net.fit(x, y, epochs=3, seed=0, validation_split=0.2, patience=1, verbose=False)
    net.evaluate(x, y)
    net.predict(x)
    assert capsys.readouterr().out == ""


# ---- predict and evaluate ------------------------------------------------------------------------------------


def test_predict_and_evaluate_change_no_parameters_gradients_or_optimizer_state(data):
    x, y = data
    net = build(NET)
    net.fit(x, y, epochs=1, seed=0, verbose=False)
    net.loss(x[:8], y[:8])
    net.backward()
    before, grads = state(net), {k: v.copy() for k, v in net.grads.items()}
    outputs = net.predict(x)
    metrics = net.evaluate(x, y, batch_size=7)
    assert_same_state(state(net), before)
    for name, grad in grads.items():
        np.testing.assert_array_equal(net.grads[name], grad)
    np.testing.assert_allclose(outputs, net.forward(x), rtol=1e-12)
    assert metrics["accuracy"] == np.mean(outputs.argmax(axis=1) == y)
    log_softmax = outputs - outputs.max(axis=1, keepdims=True)
    log_softmax -= np.log(np.exp(log_softmax).sum(axis=1, keepdims=True))
    assert metrics["loss"] == pytest.approx(-log_softmax[np.arange(100), y].mean(), rel=1e-12)


def test_predict_and_evaluate_clear_the_forward_cache_so_backward_cannot_use_it(data):
    """Their forward passes overwrite the arrays backward() would read, so backward() must refuse, not guess."""
    x, y = data
    net = build(NET)
    net.loss(x[:8], y[:8])
    net.predict(x[:8])
    with pytest.raises(RuntimeError, match="needs a forward"):
        net.backward()
    net.loss(x[:8], y[:8])
    net.evaluate(x, y)
    with pytest.raises(RuntimeError, match="needs a forward"):
        net.backward()
    net.loss(x[:8], y[:8])  # and a new loss() makes backward() work again
    assert net.backward().shape == (8, 4)


def test_batch_size_does_not_change_predictions_or_metrics(data):
    x, y = data
    net = build(NET)
    np.testing.assert_allclose(net.predict(x, batch_size=1), net.predict(x), rtol=1e-12)
    assert net.evaluate(x, y, batch_size=13)["loss"] == pytest.approx(net.evaluate(x, y)["loss"], rel=1e-12)


def test_probability_targets_count_accuracy_by_their_largest_class(data):
    x, y = data
    net = build(NET)
    soft = np.full((100, 3), 0.1)
    soft[np.arange(100), y] = 0.8
    assert net.evaluate(x, soft)["accuracy"] == net.evaluate(x, y)["accuracy"]


TIES = "model Tie { input [4] ReLU Linear(3, bias=false) loss CrossEntropy optimizer SGD(lr=0.1) }"


@pytest.mark.parametrize("ties", ["none", "some samples", "every sample"])
def test_accuracy_is_that_of_argmax_also_where_classes_tie_for_the_largest_logit(ties, data):
    """CrossEntropy counts hits from its loss's class-major arrays and falls back to argmax where classes tie (the
    first largest class is the prediction): evaluate agrees with argmax, and fit with argmax before each step."""
    x, y = data
    if ties != "none":
        # A sample whose inputs are all ≤ 0 has logits ReLU(x)·W = 0 for every class: argmax says class 0.
        x = x.copy()
        x[:: 1 if ties == "every sample" else 3] = -np.abs(x[:: 1 if ties == "every sample" else 3])
    source = NET if ties == "none" else TIES
    net, twin = build(source, seed=3), build(source, seed=3)
    predicted = net.predict(x).argmax(axis=1)
    assert (predicted == 0).all() == (ties == "every sample")
    assert net.evaluate(x, y)["accuracy"] == np.mean(predicted == y)
    assert net.evaluate(x, y, batch_size=7)["accuracy"] == pytest.approx(np.mean(predicted == y), abs=1e-15)
    # fit's accuracy: of each batch before its step.
    _, accuracies = manual_fit(twin, x, y, epochs=1, batch_size=10, seed=0)
    assert net.fit(x, y, epochs=1, batch_size=10, seed=0, verbose=False)["accuracy"] == accuracies


def test_bce_reports_accuracy_with_outputs_thresholded_at_one_half(rng):
    net = build("model B { input [3] Linear(2) Sigmoid loss BCE }")
    x = rng.standard_normal((20, 3))
    t = (rng.random((20, 2)) > 0.5).astype(float)
    metrics = net.evaluate(x, t)
    assert list(metrics) == ["loss", "accuracy"]
    assert metrics["accuracy"] == np.mean((net.predict(x) > 0.5) == (t > 0.5))
    assert list(net.fit(x, t, epochs=1, seed=0, verbose=False)) == ["loss", "accuracy"]


def test_a_model_without_a_loss_predicts_but_does_not_train(rng):
    net = build("model F { input [4] Linear(2) }")
    x = rng.standard_normal((5, 4))
    assert net.predict(x).shape == (5, 2)
    with pytest.raises(RuntimeError, match="has no loss"):
        net.fit(x, np.zeros((5, 2)))
    with pytest.raises(RuntimeError, match="has no loss"):
        net.evaluate(x, np.zeros((5, 2)))


# ---- bad input -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits_net():
    return nncompile.load(str(ROOT / "examples" / "digits_mlp.nn")).DigitsMLP(seed=0)


@pytest.mark.parametrize("call", ["fit", "evaluate", "predict"])
def test_a_wrong_feature_shape_is_named_exactly(digits_net, call):
    x, y = np.zeros((32, 63)), np.zeros(32, int)
    args = (x,) if call == "predict" else (x, y)
    with pytest.raises(ValueError, match=re.escape("DigitsMLP: wrong input shape: expected (batch, 64), got (32, 63)")):
        getattr(digits_net, call)(*args)


def test_other_wrong_shapes_are_errors_not_broadcasts(digits_net):
    with pytest.raises(ValueError, match=re.escape("expected (batch, 64), got (64,)")):
        digits_net.predict(np.zeros(64))
    with pytest.raises(ValueError, match=re.escape("for one sample add the batch axis: x[None] has shape (1, 64)")):
        digits_net.predict(np.zeros(64))
    # An empty batch is no mistake for predict: it has an empty answer.
    assert digits_net.predict(np.zeros((0, 64))).shape == (0, 10)
    with pytest.raises(ValueError, match=re.escape("expected (batch, 64), got (8, 64, 1)")):
        digits_net.fit(np.zeros((8, 64, 1)), np.zeros(8, int))
    with pytest.raises(ValueError, match=re.escape("expected (batch, 64), got (5, 63)")):
        digits_net.fit(np.zeros((8, 64)), np.zeros(8, int), validation_data=(np.zeros((5, 63)), np.zeros(5, int)))


@pytest.mark.parametrize("call", ["fit", "evaluate"])
def test_mismatched_x_and_y_lengths(digits_net, call):
    message = "DigitsMLP: x and y must have the same length, got 32 samples in x and 31 in y"
    with pytest.raises(ValueError, match=re.escape(message)):
        getattr(digits_net, call)(np.zeros((32, 64)), np.zeros(31, int))
    with pytest.raises(ValueError, match=re.escape("got 32 samples in x and a scalar in y")):
        getattr(digits_net, call)(np.zeros((32, 64)), 3)
    with pytest.raises(ValueError, match=re.escape("got 32 samples in x_val and 30 in y_val")):
        digits_net.fit(np.zeros((8, 64)), np.zeros(8, int), validation_data=(np.zeros((32, 64)), np.zeros(30, int)))


@pytest.mark.parametrize("call", ["fit", "evaluate"])
def test_labels_out_of_range(digits_net, call):
    labels = np.arange(32) % 10
    labels[17] = 10
    with pytest.raises(ValueError, match=re.escape("class label 10 is out of range for 10 classes (0..9)")):
        getattr(digits_net, call)(np.zeros((32, 64)), labels)
    labels[17] = -1
    with pytest.raises(ValueError, match=re.escape("class label -1 is out of range for 10 classes (0..9)")):
        getattr(digits_net, call)(np.zeros((32, 64)), labels)


def test_non_finite_inputs_are_refused_before_training(digits_net):
    x = np.zeros((32, 64))
    x[5, 3] = np.nan
    with pytest.raises(ValueError, match="DigitsMLP: x has a NaN or infinite value in sample 5"):
        digits_net.fit(x, np.zeros(32, int))
    t = np.zeros((8, 2))
    t[6, 1] = np.inf
    with pytest.raises(ValueError, match="y has a NaN or infinite value in sample 6"):
        build(REGRESSOR).fit(np.zeros((8, 4)), t)


@pytest.mark.parametrize(("bad", "shape"), [("x", (8, 4)), ("y", (8,)), ("y", (8, 1))])
def test_a_nan_among_huge_finite_values_is_found_without_an_overflow_warning(bad, shape):
    """The data check sums values (a finite sum proves them finite); where finite values overflow the sum, it looks
    at them one by one, quietly: the only complaint is the NaN's."""
    data = {"x": np.zeros((8, 4)), "y": np.zeros(8)}
    data[bad] = np.full(shape, 1e308)
    data[bad][(6,) + (0,) * (len(shape) - 1)] = np.nan
    net = build("model One { input [4] Linear(1) loss MSE }")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for call in (net.fit, net.evaluate):
            with pytest.raises(ValueError, match=f"{bad} has a NaN or infinite value in sample 6"):
                call(data["x"], data["y"])


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"batch_size": 0}, "batch_size must be an integer >= 1, got 0"),
        ({"batch_size": 2.5}, "batch_size must be an integer >= 1, got 2.5"),
        ({"epochs": -1}, "epochs must be an integer >= 0, got -1"),
        ({"patience": -2, "validation_split": 0.5}, "patience must be an integer >= 0, got -2"),
        ({"patience": 3}, "patience needs validation: pass validation_data or validation_split"),
        ({"validation_split": 1.0}, "validation_split must be in [0, 1), got 1.0"),
        ({"validation_split": 0.99}, "validation_split=0.99 of 8 samples leaves a part empty"),
        ({"validation_split": 0.5, "validation_data": ([[0] * 64], [0])}, "pass validation_data or validation_split"),
        ({"validation_data": [np.zeros((2, 64))]}, "validation_data must be a pair (x_val, y_val)"),
    ],
)
def test_bad_fit_arguments(digits_net, options, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        digits_net.fit(np.zeros((8, 64)), np.zeros(8, int), verbose=False, **options)
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
        digits_net.predict(np.zeros((8, 64)), batch_size=0)


# ---- non-finite losses and interrupts ----------------------------------------------------------------------


def record_steps(net, on_call=None):
    """Wrap fit()'s step (net._apply_step): remember the state before every call; on_call(n) runs after the n-th
    real step."""
    before, real_step = [], net._apply_step

    def step():
        before.append(state(net))
        real_step()
        if on_call is not None:
            on_call(len(before))

    net._apply_step = step
    return before


def test_a_non_finite_loss_stops_fit_without_its_step_and_keeps_the_last_completed_one(data, capsys, monkeypatch):
    x, y = data
    net = build(NET)
    after = []
    record_steps(net, lambda call: after.append(state(net)))
    real_forward, calls = net._forward, []

    def forward(batch):
        calls.append(1)
        outputs = real_forward(batch)
        if len(calls) == 7:  # the 7th batch (epoch 2, batch 3) gives a NaN loss, from finite parameters
            outputs[0][0, 0] = np.nan
        return outputs

    monkeypatch.setattr(net, "_forward", forward)
    with pytest.raises(FloatingPointError) as error:
        net.fit(x, y, epochs=3, batch_size=32, seed=0)
    message = str(error.value)
    assert message.startswith("Net.fit: the loss is nan at epoch 2, batch 3 of 4; training stopped without its step")
    assert "parameters and optimizer state are those after step 6, the last completed" in message
    assert net.step_count == 6 and len(after) == 6
    assert_same_state(state(net), after[5])  # nothing undone: the state after the last completed step
    assert all(np.isfinite(value).all() for value in net.params.values())
    assert error.value.history["loss"] and len(error.value.history["loss"]) == 1
    assert capsys.readouterr().out.count("\n") == 1  # the completed epoch's line


def planted_gradient(monkeypatch, net, bad, at_step, hidden=False):
    """Make the gradients of the step that would be number at_step + 1 bad (as a real step would be: again when
    the same step is taken again from the same state): fc1.weight[0, 0] = bad, or with hidden, -inf in a column of
    fc1.weight after the step (and no other change), a hidden unit that ReLU turns to 0 for positive inputs, so
    that no later loss shows it."""
    real_backward = net._backward

    def backward(douts, keep):
        result = real_backward(douts, keep)
        if net.step_count == at_step:
            if hidden:
                net._flat_grads[:] = 0
                net.grads["fc1.weight"][:, 0] = np.inf
            else:
                net.grads["fc1.weight"][0, 0] = bad
        return result

    monkeypatch.setattr(net, "_backward", backward)


# Plain SGD after a ReLU: a bad step planted with hidden=True shows in no later loss.
RELU_NET = "model Net {\n input [4]\n fc1 = Linear(16)\n ReLU\n fc2 = Linear(3)\n loss CrossEntropy\n optimizer SGD(lr=0.1)\n}\n"


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("at_step", [4, 7])  # found by the next batch's non-finite loss / by the epoch-end check
def test_a_step_from_a_nan_or_inf_gradient_is_never_kept(data, monkeypatch, bad, at_step):
    x, y = data
    net = build(NET)
    before = record_steps(net)
    planted_gradient(monkeypatch, net, bad, at_step)
    with np.errstate(all="ignore"), pytest.raises(FloatingPointError) as error:
        net.fit(x, y, epochs=3, batch_size=32, seed=0, verbose=False)
    epoch, batch = divmod(at_step, 4)
    message = str(error.value)
    assert message.startswith(
        "Net.fit: the gradients have a NaN or infinite value (or a squared norm that overflows) at epoch "
        f"{epoch + 1}, batch {batch + 1} of 4; training stopped without its step; parameters and optimizer state are "
        f"those after step {at_step}"
    )
    assert net.step_count == at_step
    assert_same_state(state(net), before[at_step])  # exactly the state before the bad step, whatever came after
    assert all(np.isfinite(value).all() for value in net.params.values())
    assert len(error.value.history["loss"]) == epoch


@pytest.mark.parametrize("check_every, copy_every", [(None, None), (8, 32)])  # None: the generated defaults
def test_a_bad_step_long_after_the_last_check_is_found_and_the_steps_before_it_kept(
    monkeypatch, check_every, copy_every
):
    """Many steps in an epoch, a bad gradient between two checks that no loss shows (a ReLU hides the -inf it puts
    in a weight: every later loss stays finite): the next check finds it, and the steps before it are kept, whether
    the copy fit() goes back to was taken when it started or since (copy_every)."""
    rng = np.random.default_rng(2)
    x, y = np.abs(rng.standard_normal((400, 4))) + 0.1, rng.integers(0, 3, 400)  # positive inputs
    net, reference = build(RELU_NET), build(RELU_NET)
    clean_state = type(net).__init__.__globals__["_CleanState"]  # the generated module's
    if check_every:
        monkeypatch.setattr(clean_state, "CHECK_EVERY", check_every)
        monkeypatch.setattr(clean_state, "COPY_EVERY", copy_every)
    at_step = clean_state.CHECK_EVERY + clean_state.CHECK_EVERY // 2 + 5  # after one check, before the next
    if check_every:
        at_step += copy_every  # and after a copy
    planted_gradient(monkeypatch, net, np.inf, at_step, hidden=True)
    with np.errstate(all="ignore"), pytest.raises(FloatingPointError, match="the gradients have a NaN or infinite"):
        net.fit(x, y, epochs=1, batch_size=2, seed=0, verbose=False)
    order = np.random.default_rng([0, 0]).permutation(400)
    for step in range(at_step):
        rows = order[2 * step : 2 * step + 2]
        reference.train_step(x[rows], y[rows])
    assert net.step_count == at_step
    assert_same_state(state(net), state(reference))


def test_ctrl_c_after_a_hidden_bad_step_keeps_the_last_state_found_finite(monkeypatch, capsys):
    rng = np.random.default_rng(3)
    x, y = np.abs(rng.standard_normal((40, 4))) + 0.1, rng.integers(0, 3, 40)  # positive inputs
    net = build(RELU_NET)
    net.fit(x, y, epochs=1, batch_size=4, seed=0, verbose=False)  # 10 clean steps: the state fit() starts from
    start = state(net)
    planted_gradient(monkeypatch, net, np.inf, 12, hidden=True)
    real_forward = net._forward

    def forward(batch):
        if net.step_count == 15:
            raise KeyboardInterrupt
        return real_forward(batch)

    monkeypatch.setattr(net, "_forward", forward)
    with np.errstate(all="ignore"):
        net.fit(x, y, epochs=1, batch_size=4, seed=1, verbose=True)
    assert "interrupted in epoch 1; kept the last completed step (10)" in capsys.readouterr().out
    assert net.step_count == 10
    assert_same_state(state(net), start)  # no step checked since, so none kept


def test_a_diverging_run_stops_with_finite_parameters(rng):
    x, t = rng.standard_normal((64, 4)) * 100, rng.standard_normal((64, 2)) * 100
    net = build(REGRESSOR)
    net.lr = 10.0
    with (
        np.errstate(all="ignore"),
        # Whichever shows first: a non-finite loss, or a step (lr · g with plain SGD) whose squared norm overflows.
        pytest.raises(
            FloatingPointError, match=r"(the loss is (nan|inf)|the gradients have a NaN .*) at epoch \d+, batch"
        ),
    ):
        net.fit(x, t, epochs=100, batch_size=8, seed=0, verbose=False)
    assert all(np.isfinite(value).all() for value in net.params.values())


def test_a_non_finite_loss_on_the_first_batch_leaves_the_parameters_as_they_were(data):
    x, y = data
    net = build(NET)
    net.params["fc1.bias"][0] = np.inf
    before = state(net)
    with np.errstate(all="ignore"), pytest.raises(FloatingPointError, match="before any step of this fit()"):
        net.fit(x, y, epochs=1, verbose=False)
    assert_same_state(state(net), before)


def test_ctrl_c_during_a_step_is_held_until_the_step_is_complete(data, capsys):
    x, y = data
    net = build(NET)
    found_handler = signal.getsignal(signal.SIGINT)
    after, real_update = [], net._update

    def update():
        if len(after) == 6:  # Ctrl-C in the middle of the 7th step: it completes, then fit() stops
            os.kill(os.getpid(), signal.SIGINT)
            net.params["fc1.weight"] += 0.0  # bytecode after the signal: the handler has run by now
        real_update()
        after.append(state(net))

    net._update = update
    history = net.fit(x, y, epochs=3, batch_size=32, seed=0)
    assert net.step_count == 7 and len(after) == 7
    assert_same_state(state(net), after[6])
    assert len(history["loss"]) == 1  # epoch 1 completed; epoch 2 was interrupted after its 3rd step
    out = capsys.readouterr().out
    assert out.splitlines()[-1] == "interrupted in epoch 2; kept the last completed step (7)"
    assert signal.getsignal(signal.SIGINT) is found_handler  # fit() put the handler back


def test_an_interrupt_outside_a_step_keeps_the_state_as_it_is(data, capsys, monkeypatch):
    x, y = data
    net = build(NET)
    before = record_steps(net)
    real_forward, calls = net._forward, []

    def forward(batch):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_forward(batch)

    monkeypatch.setattr(net, "_forward", forward)
    history = net.fit(x, y, epochs=2, batch_size=50, seed=0, verbose=False)
    assert len(history["loss"]) == 1  # epoch 1 (2 batches) completed; epoch 2 was interrupted at its first batch
    assert net.step_count == 2
    assert len(before) == 2
    assert capsys.readouterr().out == ""
    monkeypatch.undo()
    # The model trains on normally afterwards.
    assert len(net.fit(x, y, epochs=1, seed=0, verbose=False)["loss"]) == 1


def test_fit_leaves_no_forward_cache_behind(data):
    x, y = data
    net = build(NET)
    net.fit(x, y, epochs=1, seed=0, verbose=False)
    with pytest.raises(RuntimeError, match="needs a forward"):
        net.backward()


def test_every_loss_with_a_metric_says_how_its_outputs_map_to_classes():
    from nncompile.registry import LOSSES, canonical, load_all

    load_all()
    for loss in canonical(LOSSES):
        assert loss.metric in (None, "accuracy"), loss.name
        if loss.metric:
            assert loss.predicted_classes and loss.true_classes, loss.name
            compile(loss.predicted_classes, loss.name, "eval")
            compile(loss.true_classes, loss.name, "eval")
