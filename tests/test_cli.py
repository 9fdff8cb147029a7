"""The nncompile command: outputs, exit codes, located errors, and no partial output on failure."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import ROOT

GOOD = "model Tiny {\n    input [4]\n    Linear(2)\n    loss MSE\n}\n"


def run_cli(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "nncompile", *map(str, args)], capture_output=True, text=True, check=False, cwd=cwd
    )


@pytest.fixture
def good_file(tmp_path):
    path = tmp_path / "tiny.nn"
    path.write_text(GOOD)
    return path


def test_writes_module_with_o(good_file, tmp_path):
    out = tmp_path / "tiny.py"
    result = run_cli(good_file, "-o", out)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "" and result.stderr == ""
    assert "class Tiny:" in out.read_text()


def test_prints_module_without_o(good_file):
    result = run_cli(good_file)
    assert result.returncode == 0
    assert result.stdout.startswith('"""Tiny') and "class Tiny:" in result.stdout


def test_check_writes_nothing(good_file, tmp_path):
    result = run_cli(good_file, "--check", "-o", tmp_path / "x.py")
    assert result.returncode == 0 and result.stdout == ""
    assert not (tmp_path / "x.py").exists()


def test_dtype_float64(good_file):
    result = run_cli(good_file, "--dtype", "float64")
    assert "DTYPE = np.float64" in result.stdout


def test_compiled_examples_import_and_train(tmp_path):
    for example in sorted((ROOT / "examples").glob("*.nn")):
        out = tmp_path / (example.stem + ".py")
        assert run_cli(example, "-o", out).returncode == 0
        script = (
            "import sys, numpy as np\n"
            "sys.modules['nncompile'] = sys.modules['lark'] = sys.modules['jinja2'] = None\n"
            f"sys.path.insert(0, {str(tmp_path)!r})\n"
            f"import {example.stem} as m\n"
            "cls = getattr(m, m.__all__[0]); net = cls(seed=0)\n"
            "x = np.random.default_rng(0).standard_normal((8, *cls.input_shape))\n"
            "print(net.train_step(x, np.arange(8) % cls.output_shape[0]))\n"
        )
        result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False)
        assert result.returncode == 0, result.stderr
        assert float(result.stdout) > 0


def _assert_located_error(result, path, line, col, message):
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    first = result.stderr.splitlines()[0]
    assert first == f"{path}:{line}:{col}: error: {message}", result.stderr
    assert "^" in result.stderr


@pytest.mark.parametrize(
    "source, line, col, message",
    [
        ("model A {\n  input [4]\n  Relu\n}\n", 3, 3, "unknown layer 'Relu'"),
        ("model A {\n  input [4]\n  Linear(2, bais=true)\n}\n", 3, 13, "Linear has no argument 'bais'"),
        ("model A {\n  input [4]\n  Linear(-2)\n}\n", 3, 10, "argument 'out' of Linear must be positive, got -2"),
        ("model A {\n  Linear(2)\n}\n", 1, 7, "model 'A' has no input statement"),
        ("model A {\n  input [4]\n  a = Linear(2)\n  a = ReLU\n}\n", 4, 3, "duplicate layer name 'a'"),
        (
            "model A {\n  input [64]\n  fc = Linear(10, in=32)\n}\n",
            3,
            3,
            "shape error in layer 'fc': Linear(in=32) receives [64]",
        ),
        ("model A {\n  input [4]\n  Linear(2\n}\n", 3, 11, "missing ')' to close the arguments of 'Linear'"),
        ("model A {\n  input [4]\n  Linear(2, init=he_nromal)\n}\n", 3, 18, "unknown initializer 'he_nromal'"),
        ("model A {\n  input [4]\n  Linear(2)\n  loss Cross\n}\n", 4, 8, "unknown loss 'Cross'"),
    ],
)
def test_errors_are_located(tmp_path, source, line, col, message):
    path = tmp_path / "bad.nn"
    path.write_text(source)
    out = tmp_path / "bad.py"
    result = run_cli(path, "-o", out)
    _assert_located_error(result, path, line, col, message)
    assert not out.exists()


def test_did_you_mean(tmp_path):
    path = tmp_path / "bad.nn"
    path.write_text("model A {\n  input [4]\n  relu\n}\n")
    assert "help: did you mean 'ReLU'?" in run_cli(path).stderr


def test_several_errors_reported_together(tmp_path):
    path = tmp_path / "bad.nn"
    path.write_text("model A {\n  input [4]\n  Relu\n  Linear(0)\n  Tanhh\n}\n")
    stderr = run_cli(path).stderr
    assert [line.split(": error")[0].rsplit(":", 2)[1] for line in stderr.splitlines() if ": error:" in line] == [
        "3",
        "4",
        "5",
    ]


def test_file_errors(tmp_path, good_file):
    missing = run_cli(tmp_path / "nope.nn")
    assert missing.returncode == 1 and missing.stderr.strip() == f"{tmp_path / 'nope.nn'}: error: no such file"
    directory = run_cli(tmp_path)
    assert directory.returncode == 1 and "is a directory" in directory.stderr
    binary = tmp_path / "bin.nn"
    binary.write_bytes(b"model A { input [4] \xff }")
    assert run_cli(binary).returncode == 1 and "not valid UTF-8" in run_cli(binary).stderr
    unwritable = run_cli(good_file, "-o", tmp_path / "no" / "such" / "dir.py")
    assert unwritable.returncode == 1 and "cannot write" in unwritable.stderr
    same = run_cli(good_file, "-o", good_file)
    assert same.returncode == 1 and "input file" in same.stderr
    assert good_file.read_text() == GOOD
    for result in (missing, directory, unwritable, same):
        assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_failed_compile_keeps_existing_output(tmp_path):
    bad = tmp_path / "bad.nn"
    bad.write_text("model A { input [4] Nope }")
    out = tmp_path / "out.py"
    out.write_text("previous")
    assert run_cli(bad, "-o", out).returncode == 1
    assert out.read_text() == "previous"
    assert sorted(os.listdir(tmp_path)) == ["bad.nn", "out.py"]


def test_usage_errors_exit_2():
    assert run_cli().returncode == 2
    assert run_cli("x.nn", "--dtype", "float16").returncode == 2


def test_library_api():
    import nncompile

    code = nncompile.compile_source(GOOD, dtype="float64")
    assert "DTYPE = np.float64" in code
    module = nncompile.load(GOOD)
    assert module.Tiny(seed=0).params["linear_1.weight"].dtype.name == "float32"
    with pytest.raises(nncompile.CompileError) as info:
        nncompile.compile_source("model A { input [4] Nope }")
    assert info.value.diagnostics[0].span.line == 1
    assert "<string>:1:21: error: unknown layer 'Nope'" in str(info.value)
