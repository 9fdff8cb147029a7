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
    assert "class Tiny(_CompiledModel):" in out.read_text()


def test_prints_module_without_o(good_file):
    result = run_cli(good_file)
    assert result.returncode == 0
    assert result.stdout.startswith('"""Tiny') and "class Tiny(_CompiledModel):" in result.stdout


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
            "x = np.abs(x).astype(int) % 2 if cls._integer_inputs else x  # indices for an Embedding\n"
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
        ("model A {\n  input [4]\n  a = Linear(2)\n  a = ReLU\n}\n", 4, 3, "'a' is defined twice"),
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


# ---------------------------------------------------------------------------------------------------------------------
# In-process checks of files, usage, --summary and --emit ir (faster than a subprocess each).


def run_here(*args):
    """Run the command in this process; (exit code, stdout, stderr). Usage errors exit via SystemExit(2)."""
    import contextlib
    import io

    from nncompile import cli

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.run([str(a) for a in args])
        except SystemExit as exit:
            code = exit.code
    return code, out.getvalue(), err.getvalue()


def test_missing_file_and_directory(tmp_path):
    assert run_here(tmp_path / "nope.nn") == (1, "", f"{tmp_path / 'nope.nn'}: error: no such file\n")
    assert run_here(tmp_path) == (1, "", f"{tmp_path}: error: is a directory, not a .nn file\n")


def test_unreadable_file(tmp_path, monkeypatch):
    path = tmp_path / "locked.nn"
    path.write_text(GOOD)
    path.chmod(0)
    try:
        if not os.access(path, os.R_OK):  # root reads anything: then only the mocked case below applies
            assert run_here(path) == (1, "", f"{path}: error: cannot read: Permission denied\n")
    finally:
        path.chmod(0o644)
    from nncompile import compiler

    def refuse(name, *args, **kwargs):
        raise PermissionError(13, "Permission denied", name)

    monkeypatch.setattr(compiler, "open", refuse, raising=False)
    assert run_here(path) == (1, "", f"{path}: error: cannot read: Permission denied\n")


def test_library_reports_file_problems_as_compile_errors(tmp_path):
    import nncompile

    path = tmp_path / "latin1.nn"
    path.write_bytes(b"model A { input [4] } # caf\xe9")
    for bad in (path, tmp_path / "missing.nn", tmp_path):
        with pytest.raises(nncompile.CompileError) as info:
            nncompile.compile_file(str(bad))
        assert str(info.value).startswith(f"{bad}:")
    with pytest.raises(nncompile.CompileError, match="no such file"):
        nncompile.load(str(tmp_path / "missing.nn"))


def test_not_utf8_is_located(tmp_path):
    path = tmp_path / "latin1.nn"
    path.write_bytes("model A {\n  input [4]\n  # café\n  Linear(2)\n}\n".encode("latin-1"))
    code, out, err = run_here(path)
    assert code == 1 and out == ""
    assert err.splitlines() == [
        f"{path}:3:8: error: not valid UTF-8: byte 0xe9 at offset 29",
        "   3 |   # caf\N{REPLACEMENT CHARACTER}",
        "     |        ^",
        "  help: save the file as UTF-8",
    ]


def test_byte_order_mark_is_accepted(tmp_path):
    path = tmp_path / "bom.nn"
    path.write_bytes(b"\xef\xbb\xbf" + GOOD.encode())
    assert run_here(path, "--check") == (0, "", "")


def test_unwritable_outputs(tmp_path, good_file, monkeypatch):
    directory = tmp_path / "out_dir"
    directory.mkdir()
    assert run_here(good_file, "-o", directory) == (
        1,
        "",
        f"{directory}: error: cannot write: the output path is a directory\n",
    )
    nowhere = tmp_path / "no" / "dir.py"
    assert run_here(good_file, "-o", nowhere) == (
        1,
        "",
        f"{nowhere}: error: cannot write: directory {nowhere.parent} does not exist\n",
    )
    import tempfile

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    target = tmp_path / "model.py"
    assert run_here(good_file, "-o", target) == (1, "", f"{target}: error: cannot write: Permission denied\n")
    assert not target.exists()


def test_failed_write_leaves_no_partial_or_temporary_file(tmp_path, good_file, monkeypatch):
    target = tmp_path / "model.py"
    target.write_text("previous")

    def full_disk(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", full_disk)
    assert run_here(good_file, "-o", target) == (1, "", f"{target}: error: cannot write: No space left on device\n")
    assert target.read_text() == "previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.py", "tiny.nn"]


def test_output_is_written_through_a_temporary_file_and_rename(tmp_path, good_file, monkeypatch):
    """The final path only ever appears by os.replace of a complete temporary file in the same directory."""
    seen = []
    real_replace = os.replace

    def spy(src, dst):
        with open(src, encoding="utf-8") as handle:
            complete = handle.read().endswith("\n")
        seen.append((os.path.dirname(src), complete, os.path.exists(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    target = tmp_path / "model.py"
    assert run_here(good_file, "-o", target)[0] == 0
    assert seen == [(str(tmp_path), True, False)]
    assert "class Tiny(_CompiledModel):" in target.read_text()


def test_output_over_the_input_is_refused_by_any_path(tmp_path, good_file, monkeypatch):
    monkeypatch.chdir(tmp_path)
    link = tmp_path / "hardlink.nn"
    os.link(good_file, link)
    for target in (good_file, "tiny.nn", "./tiny.nn", link):
        assert run_here("tiny.nn", "-o", target) == (
            1,
            "",
            f"{target}: error: refusing to overwrite the input file with the output\n",
        )
    assert good_file.read_text() == GOOD


@pytest.mark.parametrize(
    "args, message",
    [
        (["--summary", "-o", "x.py"], "--summary prints to stdout; it cannot be combined with -o"),
        (["--batch", "4"], "--batch only applies to --summary"),
        (["--summary", "--batch", "0"], "argument --batch: expected a positive integer, got 0"),
        (["--summary", "--batch", "many"], "argument --batch: expected a positive integer, got 'many'"),
        (["--summary", "--check"], "argument --check: not allowed with argument --summary"),
        (["--emit", "ir", "--check"], "argument --check: not allowed with argument --emit"),
        (["--emit", "c"], "argument --emit: invalid choice: 'c' (choose from "),
    ],
)
def test_usage_errors(good_file, args, message):
    code, out, err = run_here(good_file, *args)
    assert code == 2 and out == ""
    assert err.splitlines()[-1].startswith(f"nncompile: error: {message}")  # argparse quotes choices per version


SUMMARY_MODEL = """model Net {
    input [8, 2]
    conv = Conv1D(4, 3, bias=true)
    ReLU
    Flatten
    fc = Linear(3)
    loss CrossEntropy
    optimizer SGD(lr=0.1)
}
"""


def test_summary_table(tmp_path):
    from nncompile.registry import LAYERS, load_all

    load_all()
    if not {"Conv1D", "Flatten"} <= set(LAYERS):
        pytest.skip("needs Conv1D and Flatten")
    path = tmp_path / "net.nn"
    path.write_text(SUMMARY_MODEL)
    code, out, err = run_here(path, "--summary", "--batch", "32")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0] == "Model: Net (float32)"
    rows = {line.split()[0]: line for line in lines[4:9]}
    assert rows["conv"].split()[-2:] == ["28", "x"]  # 3·2·4 weights + 4 biases; connected to the input x
    assert rows["fc"].split()[-2:] == ["75", "flatten_1"]  # 24·3 + 3
    assert rows["flatten_1"].split()[-3:] == ["[24]", "0", "relu_1"]
    assert "Total params: 103 (412 B)" in lines
    assert "Trainable params: 103 (412 B)" in lines
    # input 16 + conv 24 + relu 24 + flatten 24 + fc 3 = 91 values per sample; 32 samples of 4 bytes
    assert "Activations for batch 32: 2,912 values (11.38 KiB), the input and every layer's output" in lines
    assert lines[-2:] == ["Loss: CrossEntropy", "Optimizer: SGD(lr=0.1)"]
    float64 = run_here(path, "--summary", "--dtype", "float64")[1]
    assert "Total params: 103 (824 B)" in float64 and "Activations for batch 1: 91 values (728 B)" in float64


def test_summary_exact_layout(good_file):
    code, out, err = run_here(good_file, "--summary")
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        "Model: Tiny (float32)",
        "─" * 54,
        "Layer (type)       Output shape  Param #  Connected to",
        "═" * 54,
        "x (Input)          [4]                 0",
        "linear_1 (Linear)  [2]                10  x",
        "═" * 54,
        "Total params: 10 (40 B)",
        "Trainable params: 10 (40 B)",
        "Non-trainable params: 0 (0 B)",
        "Activations for batch 1: 6 values (24 B), the input and every layer's output",
        "Loss: MSE",
        "Optimizer: SGD(lr=0.01, momentum=0.0, weight_decay=0.0) (the default)",
    ]


def test_summary_reports_errors_like_compiling(tmp_path):
    path = tmp_path / "bad.nn"
    path.write_text("model A {\n  input [4]\n  Relu\n}\n")
    code, out, err = run_here(path, "--summary")
    assert code == 1 and out == ""
    assert err.startswith(f"{path}:3:3: error: unknown layer 'Relu'")


def test_emit_ir(tmp_path, good_file):
    import json

    code, out, err = run_here(good_file, "--emit", "ir")
    assert (code, err) == (0, "")
    ir = json.loads(out)
    assert ir["format"] == "nncompile-ir" and ir["version"] == 2
    assert ir["file"] == str(good_file) and ir["dtype"] == "float32"
    (model,) = ir["models"]
    assert model["name"] == "Tiny"
    assert model["inputs"] == [
        {"name": "x", "shape": [4], "span": {"line": 2, "column": 5, "end_line": 2, "end_column": 14}}
    ]
    assert model["outputs"] == [{"name": "linear_1", "value": "linear_1", "shape": [2]}]
    assert model["parameter_count"] == 10
    (node,) = model["nodes"]
    assert node == {
        "name": "linear_1",
        "type": "Linear",
        "source": "Linear(2)",
        "args": {"out": 2, "in": None, "bias": True, "init": "he_normal"},
        "inputs": ["x"],
        "block": None,
        "input_shapes": [[4]],
        "output_shape": [2],
        "params": [
            {
                "name": "linear_1.weight",
                "shape": [4, 2],
                "count": 8,
                "init": "he_normal",
                "trainable": True,
                "fan_in": 4,
                "fan_out": 2,
            },
            {
                "name": "linear_1.bias",
                "shape": [2],
                "count": 2,
                "init": "zeros",
                "trainable": True,
                "fan_in": 4,
                "fan_out": 2,
            },
        ],
        "parameter_count": 10,
        "span": {"line": 3, "column": 5, "end_line": 3, "end_column": 14},
    }
    assert model["losses"] == [
        {
            "output": "linear_1",
            "scale": 1.0,
            "type": "MSE",
            "source": "MSE",
            "args": {},
            "span": {"line": 4, "column": 5, "end_line": 4, "end_column": 13},
        }
    ]
    assert model["optimizer"]["type"] == "SGD" and model["optimizer"]["span"] is None
    out_file = tmp_path / "tiny.json"
    assert run_here(good_file, "--emit", "ir", "-o", out_file)[0] == 0
    assert json.loads(out_file.read_text()) == ir


def test_internal_errors_are_reported_as_bugs(good_file, monkeypatch):
    from nncompile import cli

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(cli, "compile_source", broken)
    code, out, err = run_here(good_file)
    assert code == cli.EXIT_INTERNAL and out == ""
    assert err.splitlines() == [
        f"{good_file}: internal error: RuntimeError: boom",
        "  note: this is a bug in nncompile, not in the file; set NNCOMPILE_TRACEBACK=1 to see the traceback",
    ]
    monkeypatch.setenv(cli.TRACEBACK_ENV, "1")
    with pytest.raises(RuntimeError):
        cli.run([str(good_file)])


def test_readme_summary_example_is_current():
    """The --summary example in the README is the command's real output."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    command = "$ nncompile examples/digits_mlp.nn --summary --batch 32\n"
    assert command in readme
    shown = readme.split(command, 1)[1].split("```", 1)[0]
    code, out, err = run_here(ROOT / "examples" / "digits_mlp.nn", "--summary", "--batch", "32")
    assert (code, err) == (0, "")
    assert shown == out


# ---------------------------------------------------------------------------------------------------------------------
# Output paths: only regular files are replaced; the mode follows the umask or the replaced file.


def _listing(directory):
    return sorted(p.name for p in directory.iterdir())


def test_special_output_paths_are_refused_and_left_untouched(tmp_path, good_file):
    import socket
    import stat

    fifo = tmp_path / "fifo.py"
    os.mkfifo(fifo)
    sock = tmp_path / "sock.py"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(sock))
    # A link to /dev/null, not /dev/null itself: if this ever regresses, only the link is replaced, even as root.
    device = tmp_path / "null.py"
    device.symlink_to(os.devnull)
    try:
        for target, kind, check in (
            (fifo, "a named pipe (FIFO)", stat.S_ISFIFO),
            (sock, "a socket", stat.S_ISSOCK),
            (device, "a character device", stat.S_ISCHR),
        ):
            assert run_here(good_file, "-o", target) == (
                1,
                "",
                f"{target}: error: cannot write: the output path is {kind}, not a regular file\n",
            )
            assert check(os.stat(target).st_mode), target
        assert device.is_symlink() and os.readlink(device) == os.devnull
        assert _listing(tmp_path) == ["fifo.py", "null.py", "sock.py", "tiny.nn"]
    finally:
        server.close()


def test_empty_file_names_are_usage_errors(good_file):
    code, out, err = run_here(good_file, "-o", "")
    assert code == 2 and out == ""
    assert err.splitlines()[-1] == "nncompile: error: argument -o/--output: expected a file name, got an empty string"
    code, out, err = run_here("")
    assert code == 2 and out == ""
    assert err.splitlines()[-1] == "nncompile: error: argument input: expected a file name, got an empty string"


@pytest.mark.parametrize("umask, mode", [(0o077, 0o600), (0o002, 0o664), (0o022, 0o644)])
def test_new_output_file_follows_the_umask(tmp_path, good_file, umask, mode):
    target = tmp_path / "model.py"
    previous = os.umask(umask)
    try:
        assert run_here(good_file, "-o", target)[0] == 0
    finally:
        os.umask(previous)
    assert target.stat().st_mode & 0o7777 == mode


def test_replaced_output_file_keeps_its_mode(tmp_path, good_file):
    target = tmp_path / "model.py"
    target.write_text("previous")
    for mode in (0o640, 0o755, 0o600):
        target.chmod(mode)
        assert run_here(good_file, "-o", target)[0] == 0
        assert target.stat().st_mode & 0o7777 == mode
        assert "class Tiny(_CompiledModel):" in target.read_text()


# ---------------------------------------------------------------------------------------------------------------------
# SIGINT and SIGTERM: a one-line message, exit 130 or 143, no traceback, no temporary or partial file.

SIGNALS = [
    pytest.param("SIGINT", 130, "interrupted", id="SIGINT"),
    pytest.param("SIGTERM", 143, "terminated by SIGTERM", id="SIGTERM"),
]


def _start(args, **kwargs):
    import signal

    # As from an interactive shell: a test run in the background (SIGINT ignored) must not pass that on. A signal
    # caught here is reset to its default in the child; an ignored one would stay ignored.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return subprocess.Popen(
            [sys.executable, *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs
        )
    finally:
        signal.signal(signal.SIGINT, previous)


def _wait_for(condition, process, what):
    import time

    deadline = time.monotonic() + 60
    while not condition():
        assert process.poll() is None, f"exited before {what}: {process.communicate()}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


@pytest.mark.parametrize("name, code, message", SIGNALS)
def test_signal_while_compiling(tmp_path, name, code, message):
    """The input is a FIFO that never delivers: the command waits in the middle of reading it."""
    import errno
    import signal

    source = tmp_path / "slow.nn"
    os.mkfifo(source)
    process = _start(["-m", "nncompile", source, "-o", tmp_path / "slow.py"])
    writer = None

    def reading():  # a write end opens without blocking only once the command holds the read end
        nonlocal writer
        try:
            writer = os.open(source, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as err:
            assert err.errno == errno.ENXIO, err
        return writer is not None

    try:
        _wait_for(reading, process, "the command to open its input")
        process.send_signal(getattr(signal, name))
        out, err = process.communicate(timeout=60)
    finally:
        process.kill()
        if writer is not None:
            os.close(writer)
    assert (process.returncode, out, err) == (code, "", f"{source}: error: {message}\n")
    assert _listing(tmp_path) == ["slow.nn"]


# Run the command with a temporary file that, once created, waits for the test's go-ahead (a file named GO).
SLOW_WRITE = """
import os, sys, tempfile, time
from nncompile import cli

real_mkstemp = tempfile.mkstemp

def waiting_mkstemp(*args, **kwargs):
    result = real_mkstemp(*args, **kwargs)
    deadline = time.monotonic() + 60
    while not os.path.exists(os.environ["GO"]) and time.monotonic() < deadline:
        time.sleep(0.01)
    return result

tempfile.mkstemp = waiting_mkstemp
sys.exit(cli.run(sys.argv[1:]))
"""


@pytest.mark.parametrize("name, code, message", SIGNALS)
def test_signal_while_writing_leaves_no_temporary_file(tmp_path, good_file, name, code, message):
    import signal

    out_dir = tmp_path / "out"
    out_dir.mkdir()
    target = out_dir / "model.py"
    target.write_text("previous")
    go = tmp_path / "go"
    process = _start(["-c", SLOW_WRITE, good_file, "-o", target], env={**os.environ, "GO": str(go)})
    try:
        _wait_for(lambda: len(_listing(out_dir)) == 2, process, "the temporary file")
        process.send_signal(getattr(signal, name))
        go.touch()
        out, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert _listing(out_dir) == ["model.py"]
    assert target.read_text() == "previous"
    assert (process.returncode, out, err) == (code, "", f"{good_file}: error: {message}\n")


# ---------------------------------------------------------------------------------------------------------------------
# Standard output and standard error that cannot be written; file names with control characters.


def _run_with(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, close=None):
    """Run the command; `close` (1 or 2) starts it with that descriptor closed, like `>&-` or `2>&-` in a shell."""
    command = [sys.executable, "-m", "nncompile", *map(str, args)]
    if close is not None:
        command = ["sh", "-c", f'exec "$@" {close}>&-', "sh", *command]
    return subprocess.run(command, stdout=stdout, stderr=stderr, text=True, check=False)


@pytest.mark.parametrize("args", [[], ["--summary"], ["--emit", "ir"], ["--help"]], ids=["py", "summary", "ir", "help"])
def test_full_stdout_is_one_line_and_exit_1(good_file, args):
    with open("/dev/full", "w") as full:
        result = _run_with([good_file, *args], stdout=full)
    assert (result.returncode, result.stderr) == (1, "<stdout>: error: cannot write: No space left on device\n")


def test_closed_or_broken_stdout_is_one_line_and_exit_1(good_file):
    closed = _run_with([good_file], stdout=None, close=1)
    assert (closed.returncode, closed.stderr) == (1, "<stdout>: error: cannot write: standard output is closed\n")
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        broken = _run_with([good_file], stdout=write_end)
    finally:
        os.close(write_end)
    assert (broken.returncode, broken.stderr) == (1, "<stdout>: error: cannot write: Broken pipe\n")


def test_unwritable_stderr_never_reaches_stdout(tmp_path):
    bad = tmp_path / "bad.nn"
    bad.write_text("model A { input [4] Nope }")
    closed = _run_with([bad], stderr=None, close=2)
    assert (closed.returncode, closed.stdout) == (1, "")
    with open("/dev/full", "w") as full:
        result = _run_with([bad], stderr=full)
    assert (result.returncode, result.stdout) == (1, "")


def test_file_names_are_shown_escaped(tmp_path):
    from nncompile import CompileError, Diagnostic

    name = "e\x1b[31m\u202ex\ny\r.nn"
    shown = "e\\x1b[31m\\u202ex\\ny\\r.nn"
    bad = tmp_path / name
    bad.write_text("model A { input [4] Nope }")
    code, out, err = run_here(bad)
    assert (code, out) == (1, "")
    assert err.splitlines()[0] == f"{tmp_path}/{shown}:1:21: error: unknown layer 'Nope'"
    assert run_here(tmp_path / name, "-o", bad) == (
        1,
        "",
        f"{tmp_path}/{shown}: error: refusing to overwrite the input file with the output\n",
    )
    good = tmp_path / "good.nn"
    good.write_text(GOOD)
    target = tmp_path / "d\x07" / "m\x1b.py"
    assert run_here(good, "-o", target) == (
        1,
        "",
        f"{tmp_path}/d\\x07/m\\x1b.py: error: cannot write: directory {tmp_path}/d\\x07 does not exist\n",
    )
    assert run_here(tmp_path / "\x9b.nn") == (1, "", f"{tmp_path}/\\x9b.nn: error: no such file\n")
    truncated = CompileError([Diagnostic("bad")], filename="\x1b.nn", truncated=True)
    assert truncated.render().splitlines() == [
        "\\x1b.nn: error: bad",
        "\\x1b.nn: note: too many errors; only the first 1 are shown",
    ]


def test_display_name():
    from nncompile.errors import display_name

    assert display_name("dir/model v2.nn") == "dir/model v2.nn"
    assert display_name("caf\u00e9\\n'\".nn") == "caf\u00e9\\n'\".nn"  # printable text, backslashes included, as is
    assert display_name("a\tb\x00\x7f\x85\u2028\u200b\u202e\u2066\ufeff") == (
        "a\\tb\\x00\\x7f\\x85\\u2028\\u200b\\u202e\\u2066\\ufeff"
    )
    assert display_name(b"x\xff.nn") == "x\\udcff.nn"  # an undecodable byte of a POSIX file name


@pytest.mark.parametrize(
    "first_numpy", ['nncompile.load("model M { input [2] Linear(1) }")', "import nncompile.onnx_export"]
)
def test_blas_threads_never_take_the_signals_meant_for_the_main_thread(first_numpy):
    """A SIGINT delivered to a BLAS worker thread would leave a main thread blocked in a read (a FIFO input) asleep
    for good. Compiling needs no NumPy; where nncompile imports it first (load() running a module, the ONNX
    exporter), SIGINT and SIGTERM are blocked meanwhile, so the threads BLAS starts inherit that mask."""
    script = (
        "import os, signal, sys\n"
        "import nncompile\n"
        "print('numpy' not in sys.modules)\n"
        f"{first_numpy}\n"
        "blocked = {signal.SIGINT, signal.SIGTERM}\n"
        "print(signal.pthread_sigmask(signal.SIG_BLOCK, []) & blocked == set())\n"
        "main = os.getpid()\n"
        "bits = (1 << (signal.SIGINT - 1)) | (1 << (signal.SIGTERM - 1))\n"
        "others = []\n"
        "for task in os.listdir(f'/proc/{main}/task'):\n"
        "    status = open(f'/proc/{main}/task/{task}/status').read()\n"
        "    line = next(l for l in status.splitlines() if l.startswith('SigBlk:'))\n"
        "    if int(task) != main:\n"
        "        others.append(int(line.split()[1], 16))\n"
        "print(len(others) > 0 and all(m & bits == bits for m in others))\n"
    )
    # Two BLAS threads whatever the machine, so that there is a worker thread to look at.
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "2"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "True", "True"]
