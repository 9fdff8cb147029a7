"""Generated modules never half-write their state, never train on non-finite numbers and refuse bad values at once.

Issue 10, items 2-6 and 13: checked state loading, atomic saves, archives checked before they are read, no update
from a non-finite loss, hyperparameters checked when assigned, and the friction a new user hit.
"""

from __future__ import annotations

import copy
import errno
import os
import pickle
import re
import stat
import subprocess
import sys
import textwrap
import tracemalloc
import zipfile

import numpy as np
import pytest
from conftest import ROOT, build

import nncompile
from nncompile import docs
from nncompile.registry import LAYERS, LOSSES, OPTIMIZERS, canonical, load_all

SGD_MLP = """
model Mlp {
    input [6]
    fc1 = Linear(8)
    ReLU
    fc2 = Linear(3)
    loss CrossEntropy
    optimizer SGD(lr=0.1, momentum=0.9, weight_decay=0.01)
}
"""

ADAM_MLP = SGD_MLP.replace("SGD(lr=0.1, momentum=0.9, weight_decay=0.01)", "Adam(lr=0.01)")

REGRESSOR = "model Reg { input [4] Linear(8) Tanh Linear(2) loss MSE optimizer SGD(lr=0.05, momentum=0.5) }"
SCALAR_MSE = "model One { input [4] Linear(8) Tanh Linear(1) loss MSE optimizer SGD(lr=0.05) }"
SCALAR_BCE = "model Prob { input [4] Linear(8) Tanh Linear(1) Sigmoid loss BCE optimizer SGD(lr=0.05) }"


@pytest.fixture
def batch():
    rng = np.random.default_rng(3)
    return rng.standard_normal((5, 6)), rng.integers(0, 3, 5)


def trained(source, batch, steps=2, **options):
    """A model after a few steps, so the optimizer state (momentum, Adam moments, step count) is not zero."""
    net = build(source, **options)
    for _ in range(steps):
        net.train_step(*batch)
    return net


def snapshot(net):
    """Everything training may change: parameters, optimizer state, step count and hyperparameters."""
    return {key: value.copy() for key, value in net.state_dict().items()}


def assert_unchanged(net, before):
    after = net.state_dict()
    assert after.keys() == before.keys()
    for key, value in before.items():
        assert after[key].dtype == value.dtype, key
        np.testing.assert_array_equal(after[key], value, err_msg=key)


# ---- item 2: load_state_dict checks everything before it changes anything -------------------------------------


def _last_array_key(state):
    return [key for key in state if key.startswith("optimizer/") and key.count("/") == 2][-1]


BAD_STATES = {
    # The last array entry is the one the old code reached after overwriting all the others.
    "complex last array": lambda s: s.update({_last_array_key(s): s[_last_array_key(s)] + 1j}),
    "object array": lambda s: s.update({"params/fc2.bias": np.array([1, 2, 3], dtype=object)}),
    "strings": lambda s: s.update({"params/fc2.bias": np.array(["1", "2", "3"])}),
    "booleans for floats": lambda s: s.update({"params/fc2.bias": np.array([True, False, True])}),
    "negative step count": lambda s: s.update({"optimizer/step_count": np.array(-1)}),
    "fractional step count": lambda s: s.update({"optimizer/step_count": np.array(2.5)}),
    "boolean step count": lambda s: s.update({"optimizer/step_count": np.array(True)}),
    "negative lr": lambda s: s.update({"optimizer/lr": np.array(-1.0)}),
    "nan lr": lambda s: s.update({"optimizer/lr": np.array(np.nan)}),
    "string lr": lambda s: s.update({"optimizer/lr": np.array("abc")}),
    "negative momentum": lambda s: s.update({"optimizer/momentum": np.array(-0.5)}),
    "array lr": lambda s: s.update({"optimizer/lr": np.array([0.1, 0.2])}),
}


@pytest.mark.parametrize("problem", sorted(BAD_STATES))
def test_load_state_dict_checks_every_entry_before_changing_anything(batch, problem):
    net = trained(SGD_MLP, batch)
    before = snapshot(net)
    state = {key: value + 1 if value.dtype.kind == "f" else value for key, value in snapshot(net).items()}
    state["optimizer/step_count"] = np.array(7)
    BAD_STATES[problem](state)
    with pytest.raises(ValueError, match=r"^Mlp\.load_state_dict: entry '[^']+'"):
        net.load_state_dict(state)
    assert_unchanged(net, before)


def test_load_state_dict_refuses_values_beyond_the_range_of_float32(batch):
    net = trained(SGD_MLP, batch, dtype="float32")
    before = snapshot(net)
    state = snapshot(net)
    state["optimizer/fc2.bias/momentum_buffer"] = np.array([1.0, 1e300, 0.0])
    with pytest.raises(ValueError, match="'optimizer/fc2.bias/momentum_buffer' has values beyond the range of float32"):
        net.load_state_dict(state)
    assert_unchanged(net, before)


def test_load_state_dict_keeps_accepting_what_state_dict_gives_and_plain_numbers(batch):
    net, other = trained(SGD_MLP, batch), build(SGD_MLP, seed=5)
    state = net.state_dict()
    state["optimizer/lr"] = 0.25  # a Python float
    state["optimizer/step_count"] = 4  # a Python int
    state["params/fc2.bias"] = np.array([1, 2, 3])  # integers are real numbers
    other.load_state_dict(state)
    assert other.lr == 0.25 and isinstance(other.lr, float) and other.step_count == 4
    np.testing.assert_array_equal(other.params["fc2.bias"], [1.0, 2.0, 3.0])
    np.testing.assert_array_equal(other.params["fc1.weight"], net.params["fc1.weight"])


def test_load_refuses_a_complex_entry_in_the_file_and_changes_nothing(batch, tmp_path):
    net = trained(SGD_MLP, batch)
    before = snapshot(net)
    state = snapshot(net)
    state[_last_array_key(state)] = state[_last_array_key(state)] * (1 + 1j)
    with open(tmp_path / "bad.npz", "wb") as file:
        np.savez(file, **state)
    with pytest.raises(ValueError, match=r"Mlp\.load\('.*bad\.npz'\): entry '.*' holds complex numbers"):
        net.load(tmp_path / "bad.npz")
    assert_unchanged(net, before)


# ---- item 3: save writes atomically, at the path as given ----------------------------------------------------


def test_save_and_load_name_the_same_file(batch, tmp_path):
    net = trained(SGD_MLP, batch)
    net.save(tmp_path / "weights")
    net.save(str(tmp_path / "w.npz"))
    assert sorted(os.listdir(tmp_path)) == ["w.npz", "weights"]
    for name in ("weights", "w.npz"):
        other = build(SGD_MLP, seed=9)
        other.load(tmp_path / name)
        assert_unchanged(other, snapshot(net))


def test_a_save_that_fails_leaves_the_previous_file_and_no_temporary_file(batch, tmp_path, monkeypatch):
    net = trained(SGD_MLP, batch)
    net.save(tmp_path / "w.npz")
    saved = (tmp_path / "w.npz").read_bytes()
    net.train_step(*batch)
    real_savez = np.savez

    def disk_full(file, **arrays):
        real_savez(file, **arrays)  # most of the bytes reach the file, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np, "savez", disk_full)
    with pytest.raises(OSError, match=r"Mlp\.save\('.*w\.npz'\): No space left on device; nothing written"):
        net.save(tmp_path / "w.npz")

    def interrupted(file, **arrays):
        file.write(b"PK half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", interrupted)
    with pytest.raises(KeyboardInterrupt):
        net.save(tmp_path / "w.npz")
    assert os.listdir(tmp_path) == ["w.npz"]
    assert (tmp_path / "w.npz").read_bytes() == saved


def test_a_save_beyond_the_file_size_limit_leaves_the_previous_checkpoint(tmp_path):
    (tmp_path / "mlp_module.py").write_text(nncompile.compile_source(SGD_MLP, dtype="float64"), encoding="utf-8")
    script = textwrap.dedent(
        """
        import os, resource, signal, sys
        import numpy as np
        import mlp_module

        net = mlp_module.Mlp(seed=0)
        net.save("ck.npz")
        size = os.path.getsize("ck.npz")
        net.params["fc1.weight"][...] = 1.0
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (size // 2, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
        try:
            net.save("ck.npz")
        except OSError as err:
            print("refused", err.errno == __import__("errno").EFBIG)
        print(sorted(os.listdir(".")))
        fresh = mlp_module.Mlp(seed=1)
        fresh.load("ck.npz")
        print(np.array_equal(fresh.params["fc1.weight"], mlp_module.Mlp(seed=0).params["fc1.weight"]))
        """
    )
    result = subprocess.run(
        [sys.executable, "-B", "-c", script], cwd=tmp_path, capture_output=True, text=True, check=False, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:3] == ["refused True", "['ck.npz', 'mlp_module.py']", "True"], result.stdout


def test_save_keeps_the_mode_of_the_file_it_replaces_and_follows_the_umask_for_a_new_one(batch, tmp_path):
    net = trained(SGD_MLP, batch)
    net.save(tmp_path / "kept.npz")
    os.chmod(tmp_path / "kept.npz", 0o640)
    net.save(tmp_path / "kept.npz")
    assert stat.S_IMODE(os.stat(tmp_path / "kept.npz").st_mode) == 0o640
    old = os.umask(0o027)
    try:
        net.save(tmp_path / "new.npz")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "new.npz").st_mode) == 0o640


def test_save_refuses_a_target_that_is_not_a_regular_file_and_keeps_a_link_a_link(batch, tmp_path):
    net = trained(SGD_MLP, batch)
    os.mkfifo(tmp_path / "pipe")
    with pytest.raises(ValueError, match=r"Mlp\.save\('.*pipe'\): it exists and is not a regular file"):
        net.save(tmp_path / "pipe")
    assert stat.S_ISFIFO(os.lstat(tmp_path / "pipe").st_mode)
    net.save(tmp_path / "real.npz")
    os.symlink("real.npz", tmp_path / "link.npz")
    net.train_step(*batch)
    net.save(tmp_path / "link.npz")
    assert os.path.islink(tmp_path / "link.npz")
    other = build(SGD_MLP, seed=4)
    other.load(tmp_path / "real.npz")
    assert_unchanged(other, snapshot(net))
    assert sorted(os.listdir(tmp_path)) == ["link.npz", "pipe", "real.npz"]


# ---- item 4: load reads the archive's names and headers before any data ----------------------------------------


def _add_member(path, name, header, data_bytes):
    """Append a member to an .npz: an .npy header, then data_bytes zero bytes, written in chunks."""
    with (
        zipfile.ZipFile(path, "a", compression=zipfile.ZIP_DEFLATED) as archive,
        archive.open(name, "w", force_zip64=True) as member,
    ):
        np.lib.format.write_array_header_1_0(member, header)
        chunk = bytes(1 << 20)
        for start in range(0, data_bytes, len(chunk)):
            member.write(chunk[: min(len(chunk), data_bytes - start)])


def _peak_bytes(call):
    tracemalloc.start()
    try:
        call()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


def test_a_huge_extra_member_is_refused_without_inflating_it(batch, tmp_path):
    net = trained(SGD_MLP, batch)
    net.save(tmp_path / "w.npz")
    count = 16 << 20  # 128 MiB of float64 zeros, a few hundred KiB compressed
    _add_member(tmp_path / "w.npz", "junk.npy", {"descr": "<f8", "fortran_order": False, "shape": (count,)}, 8 * count)
    assert os.path.getsize(tmp_path / "w.npz") < 2 << 20
    before = snapshot(net)
    raised = []

    def load():
        try:
            net.load(tmp_path / "w.npz")
        except KeyError as err:
            raised.append(str(err))

    assert _peak_bytes(load) < 4 << 20
    assert raised and "unexpected entry 'junk.npy'" in raised[0] and "Mlp.load(" in raised[0]
    assert_unchanged(net, before)


def test_a_member_whose_header_claims_another_shape_is_refused_before_its_data_is_read(batch, tmp_path):
    net = trained(SGD_MLP, batch)
    state = snapshot(net)
    del state["params/fc2.bias"]
    with open(tmp_path / "w.npz", "wb") as file:
        np.savez(file, **state)
    count = 100_000_000  # 800 MB claimed; only 1 KiB there
    header = {"descr": "<f8", "fortran_order": False, "shape": (count,)}
    _add_member(tmp_path / "w.npz", "params/fc2.bias.npy", header, 1024)
    before = snapshot(net)
    raised = []

    def load():
        try:
            net.load(tmp_path / "w.npz")
        except ValueError as err:
            raised.append(str(err))

    assert _peak_bytes(load) < 4 << 20
    assert raised and "entry 'params/fc2.bias' has shape (100000000,), expected (3,)" in raised[0]
    assert_unchanged(net, before)


def test_a_member_with_bytes_beyond_its_array_is_refused(batch, tmp_path):
    net = trained(SGD_MLP, batch)
    state = snapshot(net)
    del state["params/fc2.bias"]
    with open(tmp_path / "w.npz", "wb") as file:
        np.savez(file, **state)
    _add_member(
        tmp_path / "w.npz", "params/fc2.bias.npy", {"descr": "<f8", "fortran_order": False, "shape": (3,)}, 4096
    )
    with pytest.raises(ValueError, match=r"entry 'params/fc2.bias' holds \d+ bytes, not an array of \(3,\)"):
        net.load(tmp_path / "w.npz")


@pytest.mark.parametrize(
    ("descr", "message"), [("|O", "holds Python objects"), ("<c16", "holds complex numbers"), ("|b1", "holds booleans")]
)
def test_a_member_of_a_wrong_dtype_is_refused_from_its_header(batch, tmp_path, descr, message):
    net = trained(SGD_MLP, batch)
    state = snapshot(net)
    del state["params/fc2.bias"]
    with open(tmp_path / "w.npz", "wb") as file:
        np.savez(file, **state)
    _add_member(tmp_path / "w.npz", "params/fc2.bias.npy", {"descr": descr, "fortran_order": False, "shape": (3,)}, 48)
    before = snapshot(net)
    with pytest.raises(ValueError, match=re.escape(message)):
        net.load(tmp_path / "w.npz")
    assert_unchanged(net, before)


def test_load_names_the_model_for_a_file_that_is_no_archive_or_misses_entries(batch, tmp_path):
    net = trained(SGD_MLP, batch)
    (tmp_path / "text.npz").write_text("not a zip")
    with pytest.raises(ValueError, match=r"Mlp\.load\('.*text\.npz'\): not an \.npz file written by save\(\)"):
        net.load(tmp_path / "text.npz")
    state = snapshot(net)
    del state["optimizer/lr"]
    with open(tmp_path / "short.npz", "wb") as file:
        np.savez(file, **state)
    with pytest.raises(KeyError, match="the file is missing 'optimizer/lr'"):
        net.load(tmp_path / "short.npz")


# ---- item 5: no update from a non-finite loss --------------------------------------------------------------------

# NaN and inf on purpose: NumPy's warnings about them are expected.
quiet = pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")


@quiet
@pytest.mark.parametrize("source", [SGD_MLP, ADAM_MLP])
def test_train_step_on_a_nan_input_raises_and_changes_nothing(batch, source):
    net = trained(source, batch)
    reference = copy.deepcopy(net)
    before = snapshot(net)
    x, y = batch
    poisoned = x.copy()
    poisoned[2, 3] = np.nan
    message = re.escape("Mlp.train_step: the loss is nan (x has a NaN or infinite value in sample 2); no update")
    with pytest.raises(FloatingPointError, match=message):
        net.train_step(poisoned, y)
    assert_unchanged(net, before)
    # step() would re-apply stale gradients: it refuses until they are computed again.
    with pytest.raises(FloatingPointError, match="the last train_step"):
        net.step()
    assert_unchanged(net, before)
    # Training goes on as if the bad batch had never come.
    assert net.train_step(x, y) == reference.train_step(x, y)
    assert_unchanged(net, snapshot(reference))


@quiet
def test_step_after_backward_from_a_non_finite_loss_is_refused(batch):
    net = trained(SGD_MLP, batch)
    before = snapshot(net)
    x, y = batch
    poisoned = x.copy()
    poisoned[0, 0] = np.inf
    net.zero_grad()
    assert np.isnan(net.loss(poisoned, y))
    net.backward()
    with pytest.raises(FloatingPointError, match=r"Mlp\.step: the gradients come from a loss of nan; no update"):
        net.step()
    assert_unchanged(net, before)
    # Accumulating more gradients on top does not make them usable; zero_grad does.
    net.loss(x, y)
    net.backward()
    with pytest.raises(FloatingPointError):
        net.step()
    assert_unchanged(net, before)
    net.zero_grad()
    net.loss(x, y)
    net.backward()
    net.step()
    assert net.step_count == before["optimizer/step_count"] + 1


@quiet
def test_step_refuses_non_finite_gradients_from_backward_with_dout(rng):
    net = build("model Free { input [4] fc = Linear(3) }")
    before = snapshot(net)
    x = rng.standard_normal((2, 4))
    net.forward(x)
    dout = np.ones((2, 3))
    dout[1, 2] = np.inf
    net.backward(dout)
    with pytest.raises(FloatingPointError, match="the gradient of 'fc.weight' has a NaN or infinite value"):
        net.step()
    assert_unchanged(net, before)
    net.zero_grad()
    net.forward(x)
    net.backward(np.ones((2, 3)))
    net.step()
    assert not np.array_equal(net.params["fc.weight"], before["params/fc.weight"])


@quiet
@pytest.mark.parametrize(
    ("source", "targets"),
    [
        (REGRESSOR, np.zeros((5, 2))),
        (SCALAR_BCE, np.full((5, 1), 0.5)),
        (SGD_MLP.replace("[6]", "[4]"), np.full((5, 3), 1 / 3)),
    ],
    ids=["MSE", "BCE", "CrossEntropy probabilities"],
)
@pytest.mark.parametrize("call", ["loss", "train_step", "fit"])
def test_targets_with_nan_are_refused_by_every_loss_and_entry_point(source, targets, call):
    net = build(source)
    before = snapshot(net)
    x = np.random.default_rng(0).standard_normal((5, 4))
    targets = targets.copy()
    targets[3, 0] = np.nan
    with pytest.raises(ValueError, match=r"^(Reg|Prob|Mlp): .*(NaN|nan)"):
        getattr(net, call)(x, targets, **({"verbose": False} if call == "fit" else {}))
    assert_unchanged(net, before)


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([[0.5, 0.5, 0.0], [1.2, -0.2, 0.0]], "must be non-negative numbers, got -0.2"),
        ([[0.5, 0.5, 0.0], [0.5, 0.3, 0.1]], "must sum to 1 in each row: row 1 sums to 0.9"),
        ([[0.5, 0.5, 0.0], [0.5, 0.5, np.inf]], "row 1 sums to inf"),
    ],
)
@pytest.mark.parametrize("call", ["loss", "train_step", "evaluate"])
def test_cross_entropy_refuses_negative_or_unnormalised_probability_rows(rows, message, call):
    net = build(SGD_MLP.replace("[6]", "[2]"))
    with pytest.raises(ValueError, match="^Mlp: probability targets .*" + re.escape(message)):
        getattr(net, call)(np.zeros((2, 2)), np.array(rows))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_cross_entropy_accepts_probability_rows_rounded_in_float32(dtype):
    net = build("model Wide { input [4] Linear(1000) loss CrossEntropy }", dtype=dtype)
    logits = np.random.default_rng(2).standard_normal((8, 1000)).astype(np.float32) * 5
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    assert probabilities.dtype == np.float32 and np.abs(probabilities.sum(axis=1) - 1).max() > 0
    assert np.isfinite(net.loss(np.ones((8, 4)), probabilities))


def test_complex_values_are_refused_at_every_entry_point(batch):
    net = build(SGD_MLP)
    x, y = batch
    with pytest.raises(ValueError, match="Mlp: input is complex"):
        net.train_step(x * 1j, y)
    with pytest.raises(ValueError, match="Reg: targets are complex"):
        build(REGRESSOR).loss(np.zeros((2, 4)), np.zeros((2, 2)) + 1j)
    net.forward(x)
    with pytest.raises(ValueError, match="Mlp: dout is complex"):
        net.backward(np.ones((5, 3)) * (1 + 1j))
    with pytest.raises(ValueError, match="Mlp: lr must be a real number"):
        net.lr = 0.1 + 0j


# ---- item 6: hyperparameters set at run time are checked like the compiler checks them ------------------------


@pytest.mark.parametrize(
    ("source", "name", "value", "message"),
    [
        (SGD_MLP, "lr", -1, "lr must be positive, got -1.0"),
        (SGD_MLP, "lr", 0, "lr must be positive, got 0.0"),
        (SGD_MLP, "lr", "abc", "lr must be a real number, got 'abc'"),
        (SGD_MLP, "lr", float("nan"), "lr must be a finite number, got nan"),
        (SGD_MLP, "lr", np.inf, "lr must be a finite number, got inf"),
        (SGD_MLP, "lr", True, "lr must be a real number, got True"),
        (SGD_MLP, "lr", None, "lr must be a real number, got None"),
        (SGD_MLP, "lr", [0.1], "lr must be a real number, got [0.1]"),
        (SGD_MLP, "momentum", -0.1, "momentum must not be negative, got -0.1"),
        (SGD_MLP, "weight_decay", -1e-3, "weight_decay must not be negative, got -0.001"),
        (ADAM_MLP, "beta1", 1.0, "beta1 must be in [0, 1), got 1.0"),
        (ADAM_MLP, "beta2", -0.5, "beta2 must be in [0, 1), got -0.5"),
        (ADAM_MLP, "eps", -1e-8, "eps must not be negative, got -1e-08"),
    ],
)
def test_a_bad_hyperparameter_is_refused_at_once_and_the_old_value_kept(batch, source, name, value, message):
    net = trained(source, batch)
    before = snapshot(net)
    with pytest.raises(ValueError, match="^Mlp: " + re.escape(message) + "$"):
        setattr(net, name, value)
    assert_unchanged(net, before)
    net.train_step(*batch)  # and training goes on


def test_good_hyperparameters_are_stored_as_floats(batch):
    net = build(ADAM_MLP)
    net.lr, net.beta1, net.eps = 1, np.float32(0.5), np.array(0.0)
    assert (net.lr, net.beta1, net.eps) == (1.0, 0.5, 0.0)
    assert all(type(value) is float for value in (net.lr, net.beta1, net.eps))
    net.train_step(*batch)


def test_runtime_rules_are_the_compilers_checks():
    """Every optimizer argument's check has a rule the runtime knows, and both give the same verdict."""
    load_all()
    module = nncompile.load("model R { input [1] Linear(1) }", dtype="float64")
    probes = [-1.0, -1e-9, 0.0, 1e-9, 0.5, 0.999, 1.0, 2.0]
    for optimizer in canonical(OPTIMIZERS):
        for arg in optimizer.args:
            if arg.type == "bool":
                continue  # a switch (nesterov, amsgrad) chooses code when compiling: no attribute to check
            assert arg.type == "float" and arg.check is not None, (optimizer.name, arg.name)
            test, problem = module._RULES[arg.check.rule]
            for value in probes:
                assert (arg.check(value) is None) == bool(test(value)), (optimizer.name, arg.name, value)
                if arg.check(value) is not None:
                    assert arg.check(value) == problem


# ---- item 13: the friction a new user hit ------------------------------------------------------------------------


@pytest.mark.parametrize("source", [SCALAR_MSE, SCALAR_BCE])
def test_one_output_models_take_one_dimensional_targets(source):
    rng = np.random.default_rng(4)
    x, y = rng.standard_normal((20, 4)), (rng.random(20) > 0.5).astype(float)
    flat, column = build(source), build(source)
    assert flat.loss(x, y) == column.loss(x, y[:, None])
    assert flat.train_step(x, y) == column.train_step(x, y[:, None])
    history = flat.fit(x, y, epochs=2, batch_size=8, seed=0, verbose=False, validation_split=0.25)
    assert history == column.fit(x, y[:, None], epochs=2, batch_size=8, seed=0, verbose=False, validation_split=0.25)
    assert flat.evaluate(x, y) == column.evaluate(x, y[:, None])
    assert flat.predict(x).shape == (20, 1)


def test_one_dimensional_targets_still_need_one_output():
    with pytest.raises(ValueError, match=re.escape("Reg: targets must have shape (5, 2), got (5,)")):
        build(REGRESSOR).loss(np.zeros((5, 4)), np.zeros(5))


def test_one_sample_without_its_batch_axis_gets_the_fix_named_per_input():
    net = build("model Two { input a [3] input b [2] (a, b) -> Concat -> Linear(2) }")
    with pytest.raises(ValueError, match=re.escape("input 'a' shape: expected (batch, 3), got (3,); for one sample")):
        net.predict({"a": np.zeros(3), "b": np.zeros((1, 2))})
    with pytest.raises(ValueError, match=re.escape("add the batch axis: x['a'][None] has shape (1, 3)")):
        net.predict({"a": np.zeros(3), "b": np.zeros((1, 2))})
    one = build(SCALAR_MSE)
    with pytest.raises(ValueError, match=re.escape("add the batch axis: x[None] has shape (1, 4)")):
        one.predict(np.zeros(4))


def test_predict_on_an_empty_batch_returns_empty_outputs():
    net = build("model Two { input x [3]\n h = x -> Linear(4)\n out = h -> Linear(2)\n output (h, out) }")
    result = net.predict(np.zeros((0, 3)))
    assert {name: value.shape for name, value in result.items()} == {"h": (0, 4), "out": (0, 2)}
    assert build(SCALAR_MSE).predict(np.zeros((0, 4))).shape == (0, 1)


def test_pickling_a_model_of_an_in_memory_module_says_why_and_what_to_do(batch):
    net = trained(SGD_MLP, batch)
    with pytest.raises(TypeError, match=r"cannot pickle Mlp: .*nncompile\.load\(\) lives only in memory.*save\(path\)"):
        pickle.dumps(net)
    # copy and deepcopy need no import, so they still work.
    for clone in (copy.copy(net), copy.deepcopy(net)):
        assert clone.train_step(*batch) == copy.deepcopy(net).train_step(*batch)


def test_pickling_a_model_of_an_imported_module_round_trips(batch, tmp_path, monkeypatch):
    (tmp_path / "pickled_mlp.py").write_text(nncompile.compile_source(SGD_MLP, dtype="float64"), encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "pickled_mlp", raising=False)
    import pickled_mlp

    net = pickled_mlp.Mlp(seed=0)
    net.train_step(*batch)
    clone = pickle.loads(pickle.dumps(net))
    assert type(clone) is pickled_mlp.Mlp
    assert clone.train_step(*batch) == net.train_step(*batch)
    assert_unchanged(clone, snapshot(net))


def test_documented_signatures_show_only_values_a_file_can_write():
    load_all()
    for entry in canonical(LAYERS) + canonical(LOSSES) + canonical(OPTIMIZERS):
        # `none` may show only where it is a value the argument accepts by name (GELU's approximate=none).
        writable = {f"{a.name}=none" for a in entry.args if "none" in a.choices}
        shown = entry.signature()
        for text in writable:
            shown = shown.replace(text, "")
        assert "=none" not in shown, entry.signature()
    with pytest.raises(nncompile.CompileError, match="must be an integer, got none"):
        nncompile.load("model M { input [4] Linear(3, in=none) }")
    text = docs.render()
    assert "Signature: `Linear(out, in=<inferred>, bias=true, init=he_normal)`" in text
    assert "Signature: `MaxPool1D(k, stride=k, padding=0)`" in text
    # `none` appears only as GELU's value for approximate, which a file can write.
    assert text.count("`none`") == text.count("| `approximate` | name | `none` |")


def test_linear_two_positional_form_is_documented_and_means_in_then_out():
    text = docs.render()
    assert "Positional forms: `Linear(out)`, `Linear(in, out)`" in text
    assert (ROOT / "docs" / "layers.md").read_text(encoding="utf-8") == text
    net = build("model M { input [64] Linear(64, 10) }")
    assert net.params["linear_1.weight"].shape == (64, 10)
    with pytest.raises(nncompile.CompileError, match=re.escape("Linear(in=10) receives [64]")):
        nncompile.load("model M { input [64] Linear(10, 64) }")


def test_inputs_of_strings_or_objects_are_refused_not_parsed():
    net = build(SGD_MLP)
    with pytest.raises(ValueError, match=r"Mlp: input is of dtype <U1; the model takes real numbers"):
        net.predict([["1"] * 6])
    with pytest.raises(ValueError, match="of dtype object"):
        net.predict(np.array([[1, 2, 3, 4, 5, None]], dtype=object))
    np.testing.assert_array_equal(net.predict([[1] * 6]), net.predict(np.ones((1, 6))))  # integers are numbers


@pytest.mark.parametrize("seed", [-1, 1.5, "7", True, [1, 2]])
def test_a_seed_that_is_not_an_integer_at_least_zero_is_refused_by_name_before_anything_changes(batch, seed):
    # NumPy's own message ("expected non-negative integer") named neither the method nor the argument; fit raised
    # it only when its first epoch began, after on-start work.
    source = SGD_MLP.replace("fc2 = Linear(3)", "Dropout(0.5)\n    fc2 = Linear(3)")
    with pytest.raises(ValueError, match=re.escape(f"Mlp(): seed must be None or an integer >= 0, got {seed!r}")):
        build(source, seed=seed)
    net = trained(source, batch)
    before = net.state_dict()
    calls = []
    with pytest.raises(ValueError, match=re.escape(f"Mlp.fit: seed must be None or an integer >= 0, got {seed!r}")):
        net.fit(*batch, epochs=1, batch_size=2, seed=seed, verbose=False, callbacks=[lambda *args: calls.append(args)])
    with pytest.raises(ValueError, match=re.escape("Mlp.gradcheck: seed must be None or an integer >= 0")):
        net.gradcheck(*batch, seed=seed)
    assert calls == []
    after = net.state_dict()
    assert before.keys() == after.keys()
    for key, value in before.items():
        np.testing.assert_array_equal(after[key], value, err_msg=key)


def test_numpy_integer_seeds_are_the_seeds_of_the_same_int(batch):
    a, b = build(SGD_MLP, seed=np.int64(5)), build(SGD_MLP, seed=5)
    for key, value in a.params.items():
        np.testing.assert_array_equal(value, b.params[key], err_msg=key)
    a.fit(*batch, epochs=2, batch_size=2, seed=np.uint8(3), verbose=False)
    b.fit(*batch, epochs=2, batch_size=2, seed=3, verbose=False)
    for key, value in a.params.items():
        np.testing.assert_array_equal(value, b.params[key], err_msg=key)


def test_arguments_of_the_wrong_type_get_the_argument_named_not_a_python_internal_message(batch):
    net = trained(SGD_MLP, batch)
    before = net.state_dict()
    with pytest.raises(ValueError, match=re.escape("validation_split must be in [0, 1), got '0.1'")):
        net.fit(*batch, validation_split="0.1", verbose=False)
    for eps in ("x", True):
        with pytest.raises(ValueError, match=re.escape(f"eps must be a positive number, got {eps!r}")):
            net.gradcheck(*batch, eps=eps)
    for mode in ("eval", 1, None):
        with pytest.raises(TypeError, match=re.escape(f"Mlp.train: mode must be True or False, got {mode!r}")):
            net.train(mode)
    assert net.training is True
    for method in ("save", "load"):
        with pytest.raises(TypeError, match=rf"Mlp.{method}: path must be a file name .* got NoneType"):
            getattr(net, method)(None)
    for key, value in before.items():
        np.testing.assert_array_equal(net.state_dict()[key], value, err_msg=key)


def test_save_and_load_take_a_bytes_path(batch, tmp_path):
    # save() joined a str temporary name to the bytes folder and failed.
    net, other = trained(SGD_MLP, batch), build(SGD_MLP, seed=1)
    path = os.fsencode(tmp_path / "w.npz")
    net.save(path)
    other.load(path)
    for key, value in net.state_dict().items():
        np.testing.assert_array_equal(other.state_dict()[key], value, err_msg=key)
    assert sorted(os.listdir(tmp_path)) == ["w.npz"]


def test_a_bad_seed_is_refused_with_a_communicator_too(batch):
    class OneRank:
        def Get_rank(self):
            return 0

        def Get_size(self):
            return 1

        def Bcast(self, buffer, root=0):
            pass

        def Allreduce(self, send, receive):
            receive[...] = send

    net = trained(SGD_MLP, batch)
    with pytest.raises(ValueError, match=re.escape("Mlp.fit: seed must be None or an integer >= 0, got 'a'")):
        net.fit(*batch, seed="a", comm=OneRank(), verbose=False)


# None is check_numerics' default (keep the model's setting), so it is not a bad value there.
@pytest.mark.parametrize(
    ("flag", "value"),
    [(flag, value) for flag in ("shuffle", "restore_best") for value in ("no", 0, None)]
    + [("check_numerics", "no"), ("check_numerics", 0)],
)
def test_fit_flags_take_only_true_or_false(batch, flag, value):
    # restore_best="no" used to mean True.
    net = trained(SGD_MLP, batch)
    before = net.state_dict()
    with pytest.raises(TypeError, match=re.escape(f"Mlp.fit: {flag} must be True or False, got {value!r}")):
        net.fit(*batch, verbose=False, **{flag: value})
    for key, value_before in before.items():
        np.testing.assert_array_equal(net.state_dict()[key], value_before, err_msg=key)
    assert net.check_numerics is False


def test_the_check_numerics_setting_takes_only_true_or_false(batch):
    net = trained(SGD_MLP, batch)
    with pytest.raises(TypeError, match=re.escape("Mlp: check_numerics must be True or False, got 'on'")):
        net.check_numerics = "on"
    assert net.check_numerics is False
    net.check_numerics = np.bool_(True)
    assert net.check_numerics is True
