"""Times one float32 SGD training step of nncompile's generated NumPy code against PyTorch eager
and a GEMM-only NumPy floor, interleaved in one process; prints a markdown report."""

import argparse
import gc
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import machine_info
import numpy as np
import torch

machine_info.add_repo_root_to_path()

import contenders
from contenders import Unavailable
from nn_spec import parse_nn, trace

WORKLOAD_DIR = Path(__file__).resolve().parent / "workloads"
LEARNING_RATE = 0.01
DATA_SEED = 1234
GATE_STEPS = 3
GATE_RTOL = 1e-5
MAX_INNER = 1000
NOISY_IQR_FRACTION = 0.10


@dataclass(frozen=True)
class Workload:
    nn_file: str
    model: str
    batch: int
    input_shape: tuple[int, ...]
    classes: int


WORKLOADS = {
    "mlp_small_b32": Workload("mlp_small.nn", "MlpSmall", 32, (64,), 10),
    "mlp_small_b256": Workload("mlp_small.nn", "MlpSmall", 256, (64,), 10),
    "mlp_mnist_b128": Workload("mlp_mnist.nn", "MlpMnist", 128, (784,), 10),
    "cnn1d_b64": Workload("cnn1d.nn", "Cnn1d", 64, (64, 1), 10),
    "cnn2d_b64": Workload("cnn2d.nn", "Cnn2d", 64, (28, 28, 1), 10),
}


@dataclass
class Contender:
    name: str
    step: Callable[[], object] | None
    unavailable: str = ""
    inner: int = 0
    samples_us: list[float] = field(default_factory=list)


@dataclass
class Result:
    workload: str
    contenders: list[Contender]
    gate: str = ""


# ---------------------------------------------------------------- setup


def build_contenders(workload: Workload) -> list[Contender]:
    """All three contenders, starting from the same weights and the same data."""
    spec = parse_nn((WORKLOAD_DIR / workload.nn_file).read_text())
    traced = trace(spec)
    _check_table_matches_file(workload, spec.input_shape, traced[-1].out_shape)
    x, y = make_data(workload)

    try:
        net = contenders.load_generated(WORKLOAD_DIR / workload.nn_file, workload.model, traced)
        params = {name: np.array(value, dtype=np.float32) for name, value in net.params.items()}
        generated = Contender("generated", contenders.generated_step(net, x, y))
    except Unavailable as exc:
        params = contenders.init_params(traced, seed=0)
        generated = Contender("generated", None, unavailable=str(exc))

    pytorch = Contender("pytorch", contenders.pytorch_step(traced, params, x, y, LEARNING_RATE))
    floor = Contender("gemm_floor", contenders.gemm_floor_step(traced, workload.batch, seed=0))
    return [generated, pytorch, floor]


def make_data(workload: Workload) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(DATA_SEED)
    x = rng.standard_normal((workload.batch, *workload.input_shape), dtype=np.float32)
    y = rng.integers(0, workload.classes, workload.batch, dtype=np.int64)
    return x, y


def _check_table_matches_file(workload: Workload, input_shape, output_shape) -> None:
    if tuple(input_shape) != workload.input_shape or output_shape != (workload.classes,):
        raise SystemExit(
            f"{workload.nn_file}: input {input_shape} / output {output_shape} do not "
            f"match the WORKLOADS table {workload}"
        )


# ---------------------------------------------------------------- loss gate


def loss_gate(result: Result) -> list[str]:
    """Run GATE_STEPS steps of every loss-computing contender; return mismatch messages."""
    losses = {}
    for c in result.contenders:
        if c.step and c.name != "gemm_floor":
            try:
                losses[c.name] = [float(c.step()) for _ in range(GATE_STEPS)]
            except Exception as exc:  # noqa: BLE001  a half-built compiler: report it, time the rest
                c.step, c.unavailable = None, "step raised " + contenders.describe_error(exc)
    runners = [c for c in result.contenders if c.name in losses]
    if len(runners) < 2:
        result.gate = "skipped (one loss contender)"
        return []
    reference, *others = runners
    worst, problems = 0.0, []
    for other in others:
        pairs = zip(losses[reference.name], losses[other.name])
        for index, (a, b) in enumerate(pairs, 1):
            rel = _relative_difference(a, b)
            worst = max(worst, rel)
            if rel > GATE_RTOL:
                problems.append(
                    f"  step {index}: {reference.name} {a!r} vs {other.name} {b!r} (relative difference {rel:.2e})"
                )
    result.gate = f"ok (max rel diff {worst:.1e})"
    if problems:
        problems.insert(0, f"LOSS MISMATCH in {result.workload} (relative tolerance {GATE_RTOL}):")
    return problems


def _relative_difference(a: float, b: float) -> float:
    if not (math.isfinite(a) and math.isfinite(b)):
        return math.inf
    return abs(a - b) / max(abs(a), abs(b), 1e-30)


# ---------------------------------------------------------------- timing


def settle(seconds: float) -> None:
    """Pause so the previous contender's BLAS/OpenMP threads stop spinning; collect garbage meanwhile."""
    deadline = time.perf_counter() + seconds
    gc.collect()
    time.sleep(max(0.0, deadline - time.perf_counter()))


def take_sample(step: Callable, inner: int, settle_s: float) -> float:
    """Microseconds per step, averaged over `inner` back-to-back steps."""
    settle(settle_s)
    step()  # untimed: wakes this contender's own thread pool
    gc.disable()
    try:
        start = time.perf_counter_ns()
        for _ in range(inner):
            step()
        elapsed_ns = time.perf_counter_ns() - start
    finally:
        gc.enable()
    return elapsed_ns / inner / 1e3


def time_round_robin(result: Result, args: argparse.Namespace) -> None:
    runnable = [c for c in result.contenders if c.step]
    for contender in runnable:
        for _ in range(args.warmup):
            contender.step()
        # the fastest of a few short samples estimates the undisturbed step time
        estimate_us = min(take_sample(contender.step, 3, args.settle) for _ in range(3))
        contender.inner = max(1, min(MAX_INNER, math.ceil(args.sample_ms * 1e3 / estimate_us)))
    for round_index in range(args.rounds):
        for contender in runnable:
            contender.samples_us.append(take_sample(contender.step, contender.inner, args.settle))
        if sys.stderr.isatty():
            progress(f"[{result.workload}] round {round_index + 1}/{args.rounds}", end="\r")
    progress(f"[{result.workload}] timed {args.rounds} rounds")


# ---------------------------------------------------------------- report


def render_report(results: list[Result], args: argparse.Namespace) -> str:
    lines = machine_info.header_lines(
        "nncompile training-step benchmark",
        {
            "load average before the run (1/5/15 min)": args.load_before,
            "CPU used by other processes while timing": args.others_cpu,
            "numpy": np.__version__,
            "torch": f"{torch.__version__} ({torch.get_num_threads()} threads, "
            f"CPU capability {torch.backends.cpu.get_cpu_capability()})",
            "BLAS (threadpoolctl)": machine_info.blas_description(),
            "OpenBLAS/OpenMP environment": machine_info.openblas_env(),
            "nncompile": machine_info.nncompile_description(),
            "method": f"{args.rounds} rounds round-robin after {args.warmup} warm-up steps; "
            f"{args.settle:g} s settle + 1 untimed step before each sample; a sample is "
            f"the mean of `inner` steps (~{args.sample_ms:g} ms); gc off while timing; "
            f"float32, SGD lr={LEARNING_RATE}",
        },
    )
    lines += [
        "## Time per training step (µs)",
        "",
        "| workload | contender | median | IQR | IQR/median | inner | samples |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for result in results:
        for c in result.contenders:
            lines.append(_time_row(result.workload, c))
    if any(
        _iqr_fraction(c.samples_us) > NOISY_IQR_FRACTION
        for result in results
        for c in result.contenders
        if c.samples_us
    ):
        lines += [
            "",
            (
                f"**Noisy:** an IQR exceeds {NOISY_IQR_FRACTION:.0%} of its median; something "
                "else was probably using the CPU (see the header). Rerun on an idle machine."
            ),
        ]
    lines += [
        "",
        "## Ratios of medians (below 1: the first named is faster)",
        "",
        "| workload | generated/pytorch | generated/gemm_floor | pytorch/gemm_floor | loss gate |",
        "| --- | ---: | ---: | ---: | --- |",
    ]
    for result in results:
        medians = {c.name: np.median(c.samples_us) for c in result.contenders if c.samples_us}
        ratios = [
            _ratio(medians, a, b)
            for a, b in (("generated", "pytorch"), ("generated", "gemm_floor"), ("pytorch", "gemm_floor"))
        ]
        lines.append(f"| {result.workload} | {' | '.join(ratios)} | {result.gate} |")
    return "\n".join(lines) + "\n"


def _time_row(workload: str, c: Contender) -> str:
    if not c.samples_us:
        reason = c.unavailable.replace("|", "\\|")
        return f"| {workload} | {c.name} | unavailable ({reason}) | | | | |"
    q1, median, q3 = np.percentile(c.samples_us, [25, 50, 75])
    return (
        f"| {workload} | {c.name} | {median:,.1f} | {q3 - q1:,.1f} | "
        f"{_iqr_fraction(c.samples_us):.1%} | {c.inner} | {len(c.samples_us)} |"
    )


def _iqr_fraction(samples: list[float]) -> float:
    q1, median, q3 = np.percentile(samples, [25, 50, 75])
    return (q3 - q1) / median


def _ratio(medians: dict, top: str, bottom: str) -> str:
    if top in medians and bottom in medians:
        return f"{medians[top] / medians[bottom]:.2f}"
    return "n/a"


# ---------------------------------------------------------------- main


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=40, help="timed round-robin rounds (default 40)")
    parser.add_argument(
        "--workloads", default=",".join(WORKLOADS), help=f"comma-separated subset of: {', '.join(WORKLOADS)}"
    )
    parser.add_argument("--out", type=Path, help="also write the markdown report to this file")
    parser.add_argument(
        "--settle",
        type=float,
        default=0.15,
        help="seconds to sleep before each sample so idle BLAS threads stop spinning (default 0.15)",
    )
    parser.add_argument(
        "--sample-ms",
        type=float,
        default=20.0,
        help="target duration of one sample; sets the inner repetitions (default 20)",
    )
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps per contender (default 5)")
    args = parser.parse_args(argv)
    args.workloads = [name.strip() for name in args.workloads.split(",") if name.strip()]
    unknown = [name for name in args.workloads if name not in WORKLOADS]
    if unknown:
        parser.error(f"unknown workload(s) {unknown}; choose from {list(WORKLOADS)}")
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    return args


def progress(message: str, end: str = "\n") -> None:
    print(message, end=end, file=sys.stderr, flush=True)


def report_unavailable(results: list[Result]) -> None:
    for result in results:
        for c in result.contenders:
            if c.unavailable:
                progress(f"[{result.workload}] {c.name}: unavailable ({c.unavailable})")


def main(argv=None) -> int:
    args = parse_args(argv)
    args.load_before = machine_info.load_average()
    results = []
    for name in args.workloads:
        progress(f"[{name}] building contenders")
        results.append(Result(name, build_contenders(WORKLOADS[name])))

    gc.collect()
    gc.freeze()  # keep torch's many long-lived objects out of later collections

    failures = [line for result in results for line in loss_gate(result)]
    report_unavailable(results)
    if failures:
        print("\n".join(failures), file=sys.stderr)
        print(
            "Correctness gate failed: the contenders do not compute the same loss; nothing was timed.", file=sys.stderr
        )
        return 1

    start = machine_info.cpu_snapshot()
    for result in results:
        time_round_robin(result, args)
    args.others_cpu = machine_info.others_cpu_share(start, machine_info.cpu_snapshot())
    report = render_report(results, args)
    print(report)
    if args.out:
        args.out.write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
