"""ONNX export (issue 13): every example, golden model and a model with every layer passes the official checker and
runs in onnxruntime with the outputs of the generated module's predict(); weights files and errors."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx  # the test extras install onnx and onnxruntime: missing, these tests fail rather than skip
import onnxruntime as ort
import pytest
from conftest import ROOT, readme_blocks
from onnx.reference import ReferenceEvaluator
from onnxruntime.capi.onnxruntime_pybind11_state import NotImplemented as NotImplementedKernel

import nncompile
from nncompile import CompileError, cli, onnx_export
from nncompile.registry import LAYERS, canonical, load_all

# Every exportable layer, several inputs of both types (float and int) and several outputs: an alias (probs), a
# node's own name (gate) and a value that also feeds other layers (mixed).
EVERY_LAYER = """\
model EveryLayer {
    input signal [16, 3]
    input image [6, 6, 2]
    input tokens [5] int
    s0 = signal -> Conv1D(4, 3, bias=true) -> BatchNorm -> ReLU -> MaxPool1D(3, stride=1, padding=1)
    s1 = s0 -> Conv1D(4, 4, padding=same, dilation=2)
    s = s1 -> LeakyReLU(0.1) -> AvgPool1D(2, padding=1) -> Conv1D(4, 3, stride=2) -> Sigmoid -> MaxPool1D(2)
    stacked = (s, s) -> Concat(axis=0) -> GlobalMaxPool
    i1 = image -> MaxPool2D([2, 3], stride=[1, 2], padding=1) -> ELU(alpha=0.5) -> AvgPool2D(2, stride=1, padding=1)
    i2 = i1 -> Conv2D(3, [3, 2], padding=same, dilation=[1, 2]) -> ReLU -> Conv2D(4, 2, stride=[2, 1], padding=[1, 0])
    i = i2 -> BatchNorm(affine=false) -> GlobalAvgPool
    t = tokens -> Embedding(7, 3) -> LayerNorm -> Dropout(0.3) -> Flatten
    p = image -> Permute([2, 0, 1]) -> Reshape([-1, 9]) -> LayerNorm(affine=false) -> Softplus -> Flatten
    joined = (stacked, i, t, p) -> Concat -> Linear(12) -> GELU
    g = joined -> Linear(12, bias=false) -> GELU(approximate=tanh)
    h = joined -> SiLU
    mixed = (g, h) -> Multiply
    a = (mixed, g, h) -> Add -> TanH
    probs = a -> Linear(5) -> Softmax
    logp = a -> Linear(5) -> LogSoftmax
    gate = mixed -> Linear(1)
    output (probs, logp, gate, mixed)
    loss probs -> MSE
}
"""

# Outputs that are no layer's own value: a Dropout (left out of the graph) of a hidden value and of the input.
DROPOUT_OUTPUTS = """\
model DropoutOutputs {
    input [4]
    kept = Dropout(0.5)
    h = kept -> Linear(3)
    d = h -> Dropout
    output (h, d, kept)
}
"""
SOURCES = {"EVERY_LAYER": EVERY_LAYER, "DROPOUT_OUTPUTS": DROPOUT_OUTPUTS}


def _cases():
    files = sorted((ROOT / "examples").glob("*.nn")) + sorted((ROOT / "tests" / "golden").glob("*.nn"))
    cases = []
    for path in files:
        for model in nncompile.compile_models(path.read_text(encoding="utf-8"), str(path), on_warning=lambda w: None):
            cases.append(pytest.param(path, model.name, id=f"{path.parent.name}/{path.stem}/{model.name}"))
    cases.append(pytest.param("EVERY_LAYER", "EveryLayer", id="every_layer"))
    return [*cases, pytest.param("DROPOUT_OUTPUTS", "DropoutOutputs", id="dropout_outputs")]


CASES = _cases()


def _source(path) -> str:
    return SOURCES[path] if path in SOURCES else Path(path).read_text(encoding="utf-8")


def _session(data: bytes):
    return ort.InferenceSession(data, providers=["CPUExecutionProvider"])


def _inputs(model_ir, batch: int, dtype: str, rng) -> dict[str, np.ndarray]:
    feeds = {}
    for item in model_ir.inputs:
        if item.dtype == "int":
            (num,) = {n.args["num"] for n in model_ir.nodes if n.kind.name == "Embedding" and item.name in n.inputs}
            feeds[item.name] = rng.integers(0, num, (batch, *item.shape), dtype=np.int64)
        else:
            feeds[item.name] = rng.standard_normal((batch, *item.shape)).astype(dtype)
    return feeds


def _perturbed_state(net, rng) -> dict[str, np.ndarray]:
    """The model's state with every constant-initialized parameter made random (biases off zero, normalization
    weights off one, BatchNorm's running statistics off 0 and 1), so that none can be lost or misplaced unnoticed."""
    state = net.state_dict()
    for key, value in state.items():
        if not key.startswith(("params/", "buffers/")) or key == "buffers/rng" or np.ptp(value) > 0:
            continue
        if key.endswith("running_var"):
            state[key] = rng.uniform(0.5, 2.0, value.shape)
        else:
            state[key] = value + 0.3 * rng.standard_normal(value.shape)
    net.load_state_dict(state)
    return state


def _predict(net, model_ir, feeds) -> dict[str, np.ndarray]:
    arrays = [feeds[i.name] for i in model_ir.inputs]
    result = net.predict(arrays[0] if len(arrays) == 1 else feeds)
    return result if isinstance(result, dict) else {model_ir.outputs[0]: result}


def _compare(got, want, dtype):
    """rtol 1e-5 / atol 1e-6. In float32 atol is taken relative to the output's largest magnitude: two float32
    computations that sum in different orders (onnxruntime's MLAS, NumPy's BLAS) each differ from the exact result by
    a few 1e-7 of that magnitude, which near an output element of 0 exceeds a fixed atol of 1e-6. For the 1-D CNN of
    the examples (outputs up to about 7) that happened in 53 of 200 random batches, while the largest difference
    stayed below 9e-7 of the largest output; the dense models agree exactly or within the fixed tolerances."""
    assert got.dtype == want.dtype and got.shape == want.shape
    scale = max(1.0, float(np.abs(want).max())) if dtype == "float32" else 1.0
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6 * scale)


def _reference_run(proto):
    return ReferenceEvaluator(proto).run


def _check_against_module(path, model_name, dtype, opset=onnx_export.DEFAULT_OPSET, source=None):
    source = _source(path) if source is None else source
    (model_ir,) = [m for m in nncompile.compile_models(source, on_warning=lambda w: None) if m.name == model_name]
    net = getattr(nncompile.load(source, dtype=dtype), model_name)(seed=0)
    rng = np.random.default_rng(7)
    state = _perturbed_state(net, rng)
    data = nncompile.export_onnx(source, weights=state, model=model_name, dtype=dtype, opset=opset)
    proto = onnx.load_from_string(data)
    onnx.checker.check_model(proto, full_check=True)
    try:
        session = _session(data)
        run = session.run
        assert [i.name for i in session.get_inputs()] == [i.name for i in model_ir.inputs]
        assert [o.name for o in session.get_outputs()] == model_ir.outputs
    except NotImplementedKernel:
        # onnxruntime's CPU build has no float64 Conv, AveragePool or Erf: those models run in onnx's reference
        # implementation instead, so that float64 is checked for them all the same.
        assert dtype == "float64"
        run = _reference_run(proto)
    for batch in (1, 6):
        feeds = _inputs(model_ir, batch, dtype, rng)
        want = _predict(net, model_ir, feeds)
        got = dict(zip(model_ir.outputs, run(None, feeds)))
        for name in model_ir.outputs:
            _compare(got[name], want[name], dtype)
    return proto


# Models with a padded 1-D MaxPool run in float64 in neither onnxruntime (no float64 kernel) nor onnx's reference
# implementation (it fails on padded 1-D windows in onnx 1.23): they are checked in float32 only.
NO_FLOAT64_RUNTIME = {"SignalImage", "EveryLayer"}


@pytest.mark.parametrize(
    ("path", "model_name", "dtype"),
    [
        pytest.param(*case.values, dtype, id=f"{case.id}-{dtype}")
        for case in CASES
        for dtype in ("float32", "float64")
        if dtype == "float32" or case.values[1] not in NO_FLOAT64_RUNTIME
    ],
)
def test_onnxruntime_matches_predict(path, model_name, dtype):
    _check_against_module(path, model_name, dtype)


def test_float64_kernels_onnxruntime_lacks():
    """Which float64 models go to onnx's reference implementation: exactly those with Conv, AveragePool or Erf."""
    for path, model_name in [c.values for c in CASES]:
        data = nncompile.export_onnx(_source(path), seed=0, model=model_name, dtype="float64")
        ops = {n.op_type for n in onnx.load_from_string(data).graph.node}
        try:
            _session(data)
            supported = True
        except NotImplementedKernel:
            supported = False
        assert supported == (not ops & {"Conv", "AveragePool", "Erf"}), (path, model_name, ops)


@pytest.mark.parametrize("opset", [13, 18, 20, 21])
def test_other_opsets(opset):
    """13: LayerNorm composed; 18: reductions take their axes as an input; 20: GELU as one Gelu node."""
    proto = _check_against_module("EVERY_LAYER", "EveryLayer", "float32", opset)
    ops = {n.op_type for n in proto.graph.node}
    assert ("LayerNormalization" in ops) == (opset >= 17)
    assert ("Gelu" in ops) == (opset >= 20) and ("Erf" in ops) == (opset < 20)
    assert proto.opset_import[0].version == opset


def test_float64_runs_where_onnxruntime_has_the_kernels():
    """Dense models run in float64 end to end (the ONNX types are double throughout)."""
    proto = _check_against_module(ROOT / "examples" / "digits_residual.nn", "DigitsResidual", "float64")
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.DOUBLE


def test_every_layer_has_a_mapping_and_a_row_in_the_docs():
    load_all()
    unmapped = [layer.name for layer in canonical(LAYERS) if layer.name not in onnx_export.MAPPINGS]
    assert not unmapped, f"layers without an ONNX mapping: {unmapped}"
    used = {n.kind.name for n in nncompile.compile_models(EVERY_LAYER)[0].nodes}
    assert used == {layer.name for layer in canonical(LAYERS)}, "EVERY_LAYER must use every layer"
    docs = (ROOT / "docs" / "onnx.md").read_text(encoding="utf-8")
    assert onnx_export.operator_table() in docs, "docs/onnx.md: paste nncompile.onnx_export.operator_table()"


def test_interface_metadata_and_source_lines():
    proto = onnx.load_from_string(nncompile.export_onnx(EVERY_LAYER, seed=3, filename="every.nn"))
    graph = proto.graph
    assert proto.producer_name == "nncompile" and proto.producer_version == nncompile.__version__
    assert "every.nn" in proto.doc_string
    assert {p.key: p.value for p in proto.metadata_props} == {
        "source_file": "every.nn",
        "model": "EveryLayer",
        "dtype": "float32",
        "parameters": "seed 3",
    }
    assert graph.name == "EveryLayer"
    assert proto.opset_import[0].version == 17 and proto.ir_version == 8
    types = {i.name: i.type.tensor_type for i in graph.input}
    assert types["tokens"].elem_type == onnx.TensorProto.INT64
    assert types["image"].elem_type == onnx.TensorProto.FLOAT
    assert [d.dim_param or d.dim_value for d in types["image"].shape.dim] == ["batch", 6, 6, 2]
    assert [o.name for o in graph.output] == ["probs", "logp", "gate", "mixed"]
    lines = EVERY_LAYER.splitlines()
    for node in graph.node:
        match = re.fullmatch(r"every\.nn:(\d+):(\d+): (\S+) = (.*)", node.doc_string)
        assert match, node.doc_string
        line, column = int(match[1]), int(match[2])
        assert match[4] in lines[line - 1][column - 1 :], node.doc_string  # a named chain's span starts at its name
    # No Dropout, no loss; transposes only at the ends of each channels-first run.
    ops = [n.op_type for n in graph.node]
    assert "Dropout" not in ops and ops.count("Transpose") == 5  # 2 for s, 2 for i, 1 Permute


def test_a_cnn_is_transposed_only_at_its_ends():
    """Conv2D, BatchNorm, ReLU and MaxPool2D all run channels-first: one transpose in, one out."""
    proto = onnx.load_from_string(nncompile.export_onnx(ROOT / "examples" / "digits_cnn2d.nn", seed=0))
    ops = [n.op_type for n in proto.graph.node]
    assert ops == ["Transpose", *["Conv", "Sub", "Mul", "Mul", "Add", "Relu"] * 2, "MaxPool", "Transpose"] + [
        "Flatten",
        "Gemm",
        "Relu",
        "Gemm",
    ]


def test_outputs_left_by_dropout_are_identities():
    proto = onnx.load_from_string(nncompile.export_onnx(DROPOUT_OUTPUTS, seed=0))
    assert [(n.op_type, list(n.input), list(n.output)) for n in proto.graph.node] == [
        ("Gemm", ["x", "h.weight", "h.bias"], ["h"]),
        ("Identity", ["h"], ["d"]),
        ("Identity", ["x"], ["kept"]),
    ]


def test_importing_nncompile_does_not_import_onnx():
    code = "import sys, nncompile; nncompile.compile_source('model M {\\n input [2]\\n Linear(1)\\n}'); print('onnx' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert result.stdout == "False\n"


def test_seed_export_matches_the_module_drawn_with_that_seed():
    source = (ROOT / "examples" / "digits_mlp.nn").read_text(encoding="utf-8")
    proto = onnx.load_from_string(nncompile.export_onnx(source, seed=5))
    net = nncompile.load(source).DigitsMLP(seed=5)
    initializers = {t.name: onnx.numpy_helper.to_array(t) for t in proto.graph.initializer}
    assert initializers.keys() == net.params.keys()
    for name, value in net.params.items():
        np.testing.assert_array_equal(initializers[name], value)


def test_trained_digits_model_classifies_the_test_set_identically(tmp_path):
    """Train the MLP briefly on scikit-learn's digits, save(), export with --weights, compare the classes."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x_train, x_test, y_train, y_test = train_test_split(
        (digits.data / 16).astype(np.float32), digits.target, test_size=0.25, random_state=0
    )
    path = ROOT / "examples" / "digits_mlp.nn"
    net = nncompile.load(path).DigitsMLP(seed=0)
    net.fit(x_train, y_train, epochs=3, batch_size=32, seed=0, verbose=False)
    net.save(tmp_path / "trained.npz")
    result = _cli(path, "--emit", "onnx", "-o", "digits.onnx", "--weights", "trained.npz", cwd=tmp_path)
    assert result.returncode == 0 and result.stdout == result.stderr == "", result.stderr
    session = _session((tmp_path / "digits.onnx").read_bytes())
    (logits,) = session.run(None, {"x": x_test})
    expected = net.predict(x_test)
    assert (logits.argmax(axis=1) == expected.argmax(axis=1)).all()
    # The exported weights are trained ones: 0.96 of the test set after 3 epochs, against 0.08 at the initial weights.
    assert (expected.argmax(axis=1) == y_test).mean() > 0.9
    _compare(logits, expected, "float32")


# ---- weights that do not fit, and other errors --------------------------------------------------------------

MLP = ROOT / "examples" / "digits_mlp.nn"


@pytest.fixture
def saved(tmp_path):
    """A save() file of the digits MLP, and a function writing a changed copy of it."""
    net = nncompile.load(MLP).DigitsMLP(seed=0)
    net.save(tmp_path / "mlp.npz")
    state = dict(np.load(tmp_path / "mlp.npz"))

    def changed(change) -> Path:
        copy = dict(state)
        change(copy)
        target = tmp_path / "changed.npz"
        np.savez(target, **copy)
        return target

    return tmp_path / "mlp.npz", changed


def _cli(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "nncompile", *map(str, args)], capture_output=True, text=True, check=False, cwd=cwd
    )


def _weights_error(path, weights, tmp_path) -> str:
    """The CLI's message for these weights (one located error, exit 1, nothing written), checked against the API's."""
    out = tmp_path / "out.onnx"
    result = _cli(path, "--emit", "onnx", "-o", out, "--weights", weights)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert not out.exists() and result.stdout == ""
    with pytest.raises(CompileError) as caught:
        nncompile.export_onnx(path, weights=weights)
    assert caught.value.render() == result.stderr.rstrip("\n")
    return result.stderr.splitlines()[0]


def test_weights_with_a_missing_entry(saved, tmp_path):
    _, changed = saved
    weights = changed(lambda s: s.pop("params/fc2.bias"))
    message = _weights_error(MLP, weights, tmp_path)
    assert message == f"{weights}: error: the weights do not fit model DigitsMLP: the file is missing 'params/fc2.bias'"


def test_weights_with_an_unexpected_entry(saved, tmp_path):
    _, changed = saved
    weights = changed(lambda s: s.update({"params/fc3.weight": np.zeros((10, 10))}))
    message = _weights_error(MLP, weights, tmp_path)
    assert message.endswith("the file has an unexpected entry 'params/fc3.weight'")


def test_weights_with_a_wrong_shape(saved, tmp_path):
    _, changed = saved
    weights = changed(lambda s: s.update({"params/fc1.weight": np.zeros((64, 100))}))
    message = _weights_error(MLP, weights, tmp_path)
    assert (
        message
        == f"{weights}: error: entry 'params/fc1.weight' has shape (64, 100), but model DigitsMLP expects (64, 128)"
    )


def test_weights_of_another_model(saved, tmp_path):
    mlp_weights, _ = saved
    message = _weights_error(ROOT / "examples" / "digits_residual.nn", mlp_weights, tmp_path)
    assert (
        "do not fit model DigitsResidual: the file is missing 'params/linear_1.weight' (12 missing in all)" in message
    )
    assert "and has an unexpected entry 'params/fc1.weight' (4 in all)" in message


def test_weights_not_an_npz_file(tmp_path):
    bad = tmp_path / "notes.npz"
    bad.write_text("not a zip file")
    assert "cannot read as an .npz file written by save()" in _weights_error(MLP, bad, tmp_path)
    assert _weights_error(MLP, tmp_path / "missing.npz", tmp_path).endswith("error: no such weights file")


def test_optimizer_state_and_generator_are_ignored(saved):
    weights, _ = saved
    assert "optimizer/step_count" in np.load(weights).files
    onnx.checker.check_model(onnx.load_from_string(nncompile.export_onnx(MLP, weights=weights)))


def test_layer_without_a_mapping_is_a_located_error(monkeypatch, tmp_path):
    monkeypatch.delitem(onnx_export.MAPPINGS, "ReLU")
    with pytest.raises(CompileError) as caught:
        nncompile.export_onnx(MLP, seed=0)
    first = caught.value.render().splitlines()[0]
    assert first == f"{MLP}:5:5: error: layer ReLU has no ONNX mapping yet"


def test_without_onnx_the_command_says_what_to_install(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "onnx", None)
    out = tmp_path / "m.onnx"
    assert cli.run([str(MLP), "--emit", "onnx", "-o", str(out), "--seed", "0"]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and not out.exists()
    assert captured.err == f"{MLP}: error: ONNX export needs the onnx package: pip install 'nncompile[onnx]'\n"
    with pytest.raises(onnx_export.OnnxMissing):
        nncompile.export_onnx(MLP, seed=0)
    # The rest of the command does not need it.
    assert cli.run([str(MLP), "--check"]) == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--emit", "onnx", "--seed", "0"], "--emit onnx writes a binary file: give it with -o, e.g. -o model.onnx"),
        (["--emit", "onnx", "-o", "m.onnx"], "--emit onnx needs the parameters: --weights FILE (written by save())"),
        (["--seed", "0"], "--seed only applies to --emit onnx"),
        (["--emit", "onnx", "-o", "m.onnx", "--seed", "-1"], "argument --seed: expected an integer >= 0, got -1"),
        (["--emit", "onnx", "-o", "m.onnx", "--seed", "0", "--weights", "w.npz"], "not allowed with argument"),
    ],
)
def test_usage_errors(args, message, tmp_path):
    result = _cli(MLP, *args, cwd=tmp_path)
    assert result.returncode == 2 and message in result.stderr.splitlines()[-1], result.stderr


def test_file_errors_and_model_choice(tmp_path):
    two = ROOT / "tests" / "golden" / "two_inputs.nn"
    out = tmp_path / "m.onnx"
    result = _cli(two, "--emit", "onnx", "-o", out, "--seed", "0")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [
        f"{two}: error: the file has 2 models (TwoInputs, Gated); an ONNX file holds one",
        "  help: choose one with --model NAME (model= in Python)",
    ]
    result = _cli(two, "--emit", "onnx", "-o", out, "--seed", "0", "--model", "Gate")
    assert (
        result.returncode == 1
        and result.stderr == f"{two}: error: no model named 'Gate'; the file has TwoInputs, Gated\n"
    )
    result = _cli(two, "--emit", "onnx", "-o", out, "--seed", "0", "--model", "Gated", "--opset", "99")
    assert result.returncode == 1 and "the ONNX opset must be an integer from 13 to" in result.stderr
    assert not out.exists()
    assert _cli(two, "--emit", "onnx", "-o", out, "--seed", "0", "--model", "Gated").returncode == 0
    onnx.checker.check_model(onnx.load(out), full_check=True)
    bad = tmp_path / "bad.nn"
    bad.write_text("model M {\n    input [4]\n    Linear(0)\n}\n")
    result = _cli(bad, "--emit", "onnx", "-o", out, "--seed", "0")
    assert result.returncode == 1 and result.stderr.startswith(f"{bad}:3:") and "Traceback" not in result.stderr
    # A file of one line without '{' is source text to the command (never taken for a path, as a string may be).
    bad.write_text("Linear(10)")
    result = _cli(bad, "--emit", "onnx", "-o", out, "--seed", "0")
    assert result.returncode == 1 and result.stderr.startswith(f"{bad}:1:1: error: ") and "no such" not in result.stderr


def test_api_argument_errors():
    with pytest.raises(ValueError, match="exactly one of weights= .* and seed="):
        nncompile.export_onnx(MLP)
    with pytest.raises(ValueError, match="exactly one of"):
        nncompile.export_onnx(MLP, weights={}, seed=0)
    with pytest.raises(onnx_export.OpsetError):
        nncompile.export_onnx(MLP, seed=0, opset=12)


# ---- the README section ------------------------------------------------------------------------------------


def test_readme_export_section_runs_as_written(tmp_path):
    """'Export to ONNX': its commands, then its Python block, run in one directory with the examples copied in."""
    blocks = readme_blocks("## Export to ONNX")
    (examples := tmp_path / "examples").mkdir()
    for path in (ROOT / "examples").glob("*"):
        (examples / path.name).write_bytes(path.read_bytes())
    ran = 0
    for language, code in blocks:
        if language == "python":
            (tmp_path / "block.py").write_text(code + "\n", encoding="utf-8")
            command = [sys.executable, "block.py"]
            result = subprocess.run(command, capture_output=True, text=True, check=False, cwd=tmp_path)
            assert result.returncode == 0, result.stderr
            ran += 1
            continue
        for line in code.splitlines():
            if not line.startswith("nncompile "):
                continue
            words = line.split("#", 1)[0].split()
            result = _cli(*words[1:], cwd=tmp_path)
            assert result.returncode == 0, (line, result.stderr)
            ran += 1
    assert ran >= 3
    assert (tmp_path / "digits_mlp.onnx").exists()
