"""Times nncompile.compile_source on deep generated models (N layer lines alternating Linear(32)
and ReLU) to show that compile time grows linearly with the number of layers."""

import argparse
import statistics
import sys
import time
from pathlib import Path

import machine_info

machine_info.add_repo_root_to_path()

DEFAULT_SIZES = (50, 100, 200, 500)


def deep_model_source(layers: int) -> str:
    """A model of `layers` layer lines: fc1 = Linear(32), ReLU, fc2 = Linear(32), ReLU, ..."""
    lines = [f"model Deep{layers} {{", "    input [32]"]
    for index in range(layers):
        lines.append(f"    fc{index // 2 + 1} = Linear(32)" if index % 2 == 0 else "    ReLU")
    lines += ["    loss CrossEntropy", "    optimizer SGD(lr=0.01)", "}", ""]
    return "\n".join(lines)


def time_compile(compile_source, text: str, repeats: int) -> float:
    """Median wall time in seconds of `repeats` compilations, after one untimed warm-up."""
    compile_source(text, dtype="float32")
    times = []
    for _ in range(repeats):
        start = time.perf_counter_ns()
        compile_source(text, dtype="float32")
        times.append((time.perf_counter_ns() - start) / 1e9)
    return statistics.median(times)


def load_compiler():
    """Return nncompile.compile_source, or None and the reason it is unavailable."""
    try:
        import nncompile

        return nncompile.compile_source, ""
    except Exception as exc:  # noqa: BLE001  the compiler is still being written
        return None, f"{type(exc).__name__}: {exc}"


def measure_rows(compile_source, sizes, repeats: int) -> list[str]:
    rows, base_per_layer = [], None
    for layers in sizes:
        try:
            seconds = time_compile(compile_source, deep_model_source(layers), repeats)
        except Exception as exc:  # noqa: BLE001  report the failing size, go on with the rest
            rows.append(f"| {layers} | failed: {type(exc).__name__}: {str(exc).splitlines()[0][:120]} | | |")
            continue
        per_layer = seconds / layers
        base_per_layer = base_per_layer or per_layer
        rows.append(f"| {layers} | {seconds:.3f} | {per_layer * 1e3:.2f} | {per_layer / base_per_layer:.2f} |")
    return rows


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--sizes",
        default=",".join(map(str, DEFAULT_SIZES)),
        help="comma-separated layer counts (default 50,100,200,500)",
    )
    parser.add_argument("--repeats", type=int, default=5, help="compilations per size; the median is kept (default 5)")
    parser.add_argument("--out", type=Path, help="also write the markdown report to this file")
    parser.add_argument(
        "--scaling",
        default="10000,40000",
        help="two layer counts timed once each to show linear growth: the per-layer time ratio should be near 1 "
        "(default 10000,40000; 'none' to skip)",
    )
    args = parser.parse_args(argv)
    args.sizes = [int(size) for size in args.sizes.split(",")]
    args.scaling = None if args.scaling == "none" else [int(size) for size in args.scaling.split(",")]
    return args


def scaling_rows(compile_source, sizes) -> list[str]:
    """Per-layer time of a small and a 4× larger model, and their ratio (1.0 = linear)."""
    small, large = sizes
    t_small = time_compile(compile_source, deep_model_source(small), 1) / small
    t_large = time_compile(compile_source, deep_model_source(large), 1) / large
    line = (
        f"Scaling: {small:,} layers {t_small * 1e3:.3f} ms per layer, {large:,} layers {t_large * 1e3:.3f} ms per "
        f"layer; ratio {t_large / t_small:.2f} (1.00 is linear growth)"
    )
    return ["", line]


def main(argv=None) -> int:
    args = parse_args(argv)
    compile_source, reason = load_compiler()
    lines = machine_info.header_lines(
        "nncompile compile-time benchmark",
        {
            "load average before the run (1/5/15 min)": machine_info.load_average(),
            "nncompile": machine_info.nncompile_description(),
            "method": f"median of {args.repeats} calls of compile_source(text, dtype='float32') per "
            "size after one warm-up call each; layers = layer lines, alternating Linear(32)/ReLU",
        },
    )
    if compile_source is None:
        lines.append(f"compiler unavailable ({reason}); nothing was timed.")
    else:
        lines += ["| layers | seconds | ms per layer | per-layer vs first row |", "| ---: | ---: | ---: | ---: |"]
        lines += measure_rows(compile_source, args.sizes, args.repeats)
        if args.scaling:
            lines += scaling_rows(compile_source, args.scaling)
    report = "\n".join(lines) + "\n"
    print(report)
    if args.out:
        args.out.write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
