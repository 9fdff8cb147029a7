"""The `nncompile` command: argument handling, file I/O and error printing, nothing else.

Every failure prints a located message and exits 1 (2 for wrong usage); output files are written atomically, and
only over a regular file. Ctrl-C exits 130 and SIGTERM 143 (128 + the signal number, as a shell reports a command
killed by it), each with a one-line message and no temporary file left behind.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import stat
import sys
import tempfile
import threading

from . import dot, introspect
from .compiler import DTYPES, compile_models, compile_source, read_source
from .errors import CompileError, display_name

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 3
EXIT_INTERRUPTED = 130  # SIGINT (Ctrl-C)
EXIT_TERMINATED = 143  # SIGTERM
# How messages name standard output, in place of a file name.
STDOUT_NAME = "<stdout>"
# Set to see the traceback of an internal error (a bug in nncompile, never a problem with the input).
TRACEBACK_ENV = "NNCOMPILE_TRACEBACK"


def _int_at_least(minimum: int, wanted: str):
    """An argparse type: an integer >= minimum, the message naming what was wanted."""

    def convert(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {wanted}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected {wanted}, got {value}")
        return value

    return convert


_positive_int = _int_at_least(1, "a positive integer")
_non_negative_int = _int_at_least(0, "an integer >= 0")


class _Parser(argparse.ArgumentParser):
    def print_help(self, file=None) -> None:
        # argparse ignores a failed write of --help and exits 0; report it like any other write to stdout.
        if file is None:
            _write_stdout(self.format_help())
        else:
            super().print_help(file)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="nncompile",
        description="Compile a .nn model file into a standalone NumPy module.",
    )
    parser.add_argument("input", help="the .nn file to compile")
    parser.add_argument("-o", "--output", help="write the result here (default: print it to stdout)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="only check the file; write nothing")
    mode.add_argument(
        "--summary",
        action="store_true",
        help="print a table of the layers (output shape, parameter count) and memory totals; write nothing else",
    )
    mode.add_argument(
        "--emit",
        choices=("py", "ir", "onnx", "dot"),
        default="py",
        help=(
            "what to write: the Python module (py, the default), the shape-inferred IR as JSON (ir), an ONNX model "
            "(onnx, to the file given with -o; needs --weights or --seed) or a Graphviz graph of the layers (dot)"
        ),
    )
    mode.add_argument(
        "--diagram",
        metavar="PICTURE",
        help="draw the layer graph into PICTURE (.svg, .png or .pdf) with Graphviz's dot program; write nothing else",
    )
    parser.add_argument(
        "--batch", type=_positive_int, help="batch size for the activation memory of --summary (default 1)"
    )
    parser.add_argument("--dtype", choices=DTYPES, default="float32", help="floating-point type of the module")
    onnx = parser.add_argument_group("ONNX export (--emit onnx)")
    values = onnx.add_mutually_exclusive_group()
    values.add_argument("--weights", metavar="FILE", help="the parameters: an .npz file written by the module's save()")
    values.add_argument(
        "--seed", type=_non_negative_int, metavar="N", help="fresh parameters, drawn as Model(seed=N) draws them"
    )
    onnx.add_argument(
        "--opset",
        type=_positive_int,
        metavar="N",
        help="ONNX opset to target (default 17; GELU becomes one Gelu from 20)",
    )
    onnx.add_argument("--model", metavar="NAME", help="the model to export, for a file that holds several")
    return parser


class _Failure(Exception):
    """A problem with files or arguments, already formatted for the user."""


class _Terminated(BaseException):
    """SIGTERM arrived: unwinds the command (running its cleanups) the way KeyboardInterrupt does for SIGINT."""


def _raise_terminated(signum, frame) -> None:
    raise _Terminated


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()  # signal handlers can only be set there


@contextlib.contextmanager
def _sigterm_raises():
    """While the command runs, SIGTERM raises _Terminated, unless someone set its handler before (or ignores it)."""
    if not _in_main_thread() or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def _signals_held():
    """Hold SIGINT and SIGTERM during the block, then deliver them to their usual handlers.

    The block is never cut short, so it always cleans up after itself; it gets the list of the signals that arrived.
    """
    held: list[int] = []

    def hold(signum, frame) -> None:
        held.append(signum)

    previous = {}
    if _in_main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            if signal.getsignal(signum) not in (signal.SIG_IGN, None):  # an ignored signal stays ignored
                previous[signum] = signal.signal(signum, hold)
    try:
        yield held
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if held:
            signal.raise_signal(held[0])


def _kind(mode: int) -> str:
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a special file"


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_atomically(path: str, text: str | bytes) -> None:
    """Write text (as UTF-8) or bytes to a temporary file beside `path`, then rename, so a failure never leaves half a
    file.

    Only a regular file (or nothing) at `path` is replaced: a device, FIFO or socket is refused and left untouched.
    The file gets the permissions of the file it replaces, or those of a plain open() (0o666 less the umask).
    SIGINT and SIGTERM wait until the temporary file is gone; one that arrives before the rename cancels it.
    """
    name = display_name(path)
    try:
        existing = os.stat(path)
    except OSError:  # nothing there yet (or nothing we can see): the steps below report any real problem
        existing = None
    if existing is not None and stat.S_ISDIR(existing.st_mode):
        raise _Failure(f"{name}: error: cannot write: the output path is a directory")
    if existing is not None and not stat.S_ISREG(existing.st_mode):
        raise _Failure(f"{name}: error: cannot write: the output path is {_kind(existing.st_mode)}, not a regular file")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise _Failure(f"{name}: error: cannot write: directory {display_name(directory)} does not exist")
    # Permission bits only: a set-user-ID or set-group-ID bit is not carried over to new content.
    mode = stat.S_IMODE(existing.st_mode) & 0o777 if existing is not None else 0o666 & ~_umask()
    with _signals_held() as held:
        temp = None
        try:
            fd, temp = tempfile.mkstemp(prefix=".nncompile-", suffix=".tmp", dir=directory)
            binary = isinstance(text, bytes)
            with os.fdopen(fd, "wb" if binary else "w", encoding=None if binary else "utf-8") as handle:
                handle.write(text)
            os.chmod(temp, mode)
            if not held:
                os.replace(temp, path)
        except OSError as err:
            raise _Failure(f"{name}: error: cannot write: {err.strerror or err}") from None
        finally:
            if temp is not None and os.path.lexists(temp):
                os.unlink(temp)


def _silence(stream) -> None:
    """After a failed write, point the stream's descriptor at /dev/null so the exit-time flush cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, stream.fileno())
        finally:
            os.close(devnull)
    except (OSError, ValueError):  # no descriptor (an in-memory stream) or nothing to be done
        pass


def _write_stdout(text: str) -> None:
    """Print `text` and flush it at once, so that a failed write (`> /dev/full`, `>&-`, a closed pipe) is reported."""
    stream = sys.stdout
    if stream is None:  # started with standard output closed
        raise _Failure(f"{STDOUT_NAME}: error: cannot write: standard output is closed")
    try:
        stream.write(text)
        stream.flush()
    except (OSError, ValueError) as err:  # ValueError: closed at the Python level, or not encodable
        _silence(stream)
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        raise _Failure(f"{STDOUT_NAME}: error: cannot write: {reason}") from None


def _print_error(message: str) -> None:
    """Print a message on stderr. If stderr itself cannot be written, there is nowhere left to say so."""
    stream = sys.stderr
    if stream is None:  # started with stderr closed; print(file=None) would write to stdout instead
        return
    try:
        stream.write(message + "\n")
        stream.flush()
    except (OSError, ValueError):
        _silence(stream)


def _check_usage(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.input == "":
        parser.error("argument input: expected a file name, got an empty string")
    if args.output == "":
        parser.error("argument -o/--output: expected a file name, got an empty string")
    if args.diagram is not None and os.path.splitext(args.diagram)[1].lower() not in dot.FORMATS:
        parser.error(f"argument --diagram: expected a file name ending in .svg, .png or .pdf, got {args.diagram!r}")
    if args.diagram is not None and args.output is not None:
        parser.error("--diagram writes the picture; it cannot be combined with -o")
    if args.summary and args.output is not None:
        parser.error("--summary prints to stdout; it cannot be combined with -o")
    if args.batch is not None and not args.summary:
        parser.error("--batch only applies to --summary")
    onnx_options = [f"--{o}" for o in ("weights", "seed", "opset", "model") if getattr(args, o) is not None]
    if args.emit != "onnx" and onnx_options:
        parser.error(f"{onnx_options[0]} only applies to --emit onnx")
    if args.emit == "onnx" and args.output is None:
        parser.error("--emit onnx writes a binary file: give it with -o, e.g. -o model.onnx")
    if args.emit == "onnx" and args.weights is None and args.seed is None:
        parser.error("--emit onnx needs the parameters: --weights FILE (written by save()) or --seed N (fresh ones)")
    if args.weights == "":
        parser.error("argument --weights: expected a file name, got an empty string")


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.exists(a) and os.path.exists(b) and os.path.samefile(a, b)
    except OSError:
        return False


def _print_warning(text: str) -> None:
    """Warnings go to stderr and do not change the exit code."""
    _print_error(text)


def _onnx(args: argparse.Namespace, source: str) -> bytes:
    from .onnx_export import DEFAULT_OPSET, OnnxMissing, OpsetError, export_source

    try:
        return export_source(
            source,
            args.input,
            weights=args.weights,
            seed=args.seed,
            opset=DEFAULT_OPSET if args.opset is None else args.opset,
            model=args.model,
            dtype=args.dtype,
            on_warning=_print_warning,
        )
    except (OnnxMissing, OpsetError) as err:
        raise _Failure(f"{display_name(args.input)}: error: {err}") from None


def _produce(args: argparse.Namespace, source: str) -> str | bytes | None:
    """The text (or, for ONNX, the bytes) to write for these arguments, or None for --check."""
    if args.summary:
        models = compile_models(source, filename=args.input, on_warning=_print_warning)
        return introspect.summary(models, batch=args.batch or 1, dtype=args.dtype)
    if args.emit == "ir":
        models = compile_models(source, filename=args.input, on_warning=_print_warning)
        return introspect.ir_json(models, filename=args.input, dtype=args.dtype)
    if args.emit == "onnx":
        return _onnx(args, source)
    if args.emit == "dot" or args.diagram is not None:
        models = compile_models(source, filename=args.input, on_warning=_print_warning)
        text = dot.to_dot(models, filename=args.input)
        if args.diagram is None:
            return text
        try:
            return dot.render(text, dot.FORMATS[os.path.splitext(args.diagram)[1].lower()])
        except (dot.GraphvizMissing, RuntimeError) as err:
            raise _Failure(f"{display_name(args.diagram)}: error: cannot draw the diagram: {err}") from None
    code = compile_source(source, dtype=args.dtype, filename=args.input, on_warning=_print_warning)
    return None if args.check else code


def run(argv: list[str] | None = None) -> int:
    """The command; returns the exit code. Usage errors exit through argparse with code 2."""
    name = "nncompile"  # who is interrupted, until the input file is known
    try:
        with _sigterm_raises():
            parser = _parser()
            try:
                args = parser.parse_args(argv)
            except _Failure as err:  # --help could not be printed
                _print_error(str(err))
                return EXIT_ERROR
            _check_usage(parser, args)
            name = display_name(args.input)
            return _run(args)
    except KeyboardInterrupt:
        _print_error(f"{name}: error: interrupted")
        return EXIT_INTERRUPTED
    except _Terminated:
        _print_error(f"{name}: error: terminated by SIGTERM")
        return EXIT_TERMINATED


def _run(args: argparse.Namespace) -> int:
    try:
        target = args.diagram if args.diagram is not None else args.output
        if target is not None and _same_file(target, args.input):
            raise _Failure(f"{display_name(target)}: error: refusing to overwrite the input file with the output")
        source = read_source(args.input)
        text = _produce(args, source)
        if text is None:
            return 0
        if target is not None:
            write_atomically(target, text)
        else:
            _write_stdout(text)
    except CompileError as err:
        _print_error(err.render())
        return EXIT_ERROR
    except _Failure as err:
        _print_error(str(err))
        return EXIT_ERROR
    except Exception as err:  # a bug in nncompile: say so plainly instead of a traceback
        if os.environ.get(TRACEBACK_ENV):
            raise
        _print_error(
            f"{display_name(args.input)}: internal error: {type(err).__name__}: {err}\n"
            f"  note: this is a bug in nncompile, not in the file; set {TRACEBACK_ENV}=1 to see the traceback"
        )
        return EXIT_INTERNAL
    return 0


def main() -> None:
    sys.exit(run())
