"""Times one float32 SGD training step of nncompile's generated NumPy code against PyTorch eager, a jit-compiled
JAX step and a GEMM-only NumPy floor, interleaved in one process; prints a markdown report."""

import argparse
import gc
import json
import math
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import machine_info
import numpy as np
import torch

machine_info.add_repo_root_to_path()

import contenders
import jax_contender
import lean_contender
from contenders import GateMasks, Steps, Unavailable
from workload import LEARNING_RATE, WORKLOADS, UnsupportedGraph, Workload, load_graph, make_data

GATE_STEPS = 3
GATE_RTOL = 1e-5
MAX_INNER = 1000
NOISY_IQR_FRACTION = 0.10
# (numerator, denominator) of the ratio columns.
RATIOS = (
    ("generated", "pytorch"),
    ("generated", "gemm_floor"),
    ("generated", "jax"),
    ("pytorch", "gemm_floor"),
    ("pytorch", "jax"),
    ("generated", "numpy_lean"),
    ("numpy_lean", "gemm_floor"),
)
# Issue 16's targets: the highest acceptable generated/pytorch, generated/gemm_floor and generated/jax ratios
# (None: reported, no target).
TARGET_RATIOS = (("generated", "pytorch"), ("generated", "gemm_floor"), ("generated", "jax"))
TARGET_TITLES = ("× PyTorch eager", "× GEMM floor", "× JAX jit")
TARGETS = {
    "mlp_small_b32": (0.5, 2.0, 0.8),
    "mlp_small_b256": (0.8, 2.0, 0.8),
    "mlp_mnist_b128": (1.0, 1.3, 0.8),
    "cnn1d_b64": (0.6, 2.5, 0.8),
    "residual_mlp_b128": (0.8, 1.6, 0.9),
    "cnn2d_b64": (1.0, None, 1.0),
    "mlp_bn_dropout_b128": (0.8, None, 0.9),
}


@dataclass
class Contender:
    name: str
    steps: Steps | None
    unavailable: str = ""
    has_loss: bool = True
    inner: int = 0
    samples_us: list[float] = field(default_factory=list)


@dataclass
class Result:
    workload: str
    contenders: list[Contender]
    gate: str = ""

    def medians(self) -> dict[str, float]:
        return {c.name: float(np.median(c.samples_us)) for c in self.contenders if c.samples_us}


# ---------------------------------------------------------------- setup


def build_contenders(workload: Workload) -> list[Contender]:
    """The contenders (numpy_lean only for the models it covers), from the same weights and the same data."""
    try:
        graph = load_graph(workload)
    except UnsupportedGraph as exc:
        raise SystemExit(str(exc)) from None
    x, y = make_data(graph.input_shape, graph.output_shape[0], workload.batch)
    try:
        net = contenders.load_generated(workload, graph)
        values = contenders.net_values(net)
        generated = Contender("generated", contenders.generated_steps(net, x, y))
    except Unavailable as exc:
        net, values = None, contenders.drawn_values(graph, seed=0)
        generated = Contender("generated", None, unavailable=str(exc))
    # Each GateMasks copies it now, before any step, so every contender's gate draws the generated net's masks.
    masks_from = contenders.dropout_generator(net)

    pytorch = Contender("pytorch", contenders.pytorch_steps(graph, values, x, y, LEARNING_RATE, GateMasks(masks_from)))
    try:
        jitted = Contender("jax", jax_contender.jax_steps(graph, values, x, y, LEARNING_RATE, GateMasks(masks_from)))
    except Unavailable as exc:
        jitted = Contender("jax", None, unavailable=str(exc))
    floor = Contender("gemm_floor", contenders.gemm_floor_step(graph, workload.batch, seed=0), has_loss=False)
    try:
        lean = [Contender("numpy_lean", lean_contender.lean_steps(graph, values, x, y, LEARNING_RATE))]
    except Unavailable:
        lean = []  # a model it does not cover: no row rather than one saying so for every such workload
    return [generated, pytorch, jitted, floor, *lean]


# ---------------------------------------------------------------- loss gate


def loss_gate(result: Result) -> list[str]:
    """Run GATE_STEPS gate steps of every loss-computing contender; return mismatch messages."""
    losses = {}
    for c in result.contenders:
        if c.steps and c.has_loss:
            try:
                losses[c.name] = [float(c.steps.gate()) for _ in range(GATE_STEPS)]
            except Exception as exc:  # noqa: BLE001  a half-built compiler: report it, time the rest
                c.steps, c.unavailable = None, "step raised " + contenders.describe_error(exc)
    runners = [c.name for c in result.contenders if c.name in losses]
    if len(runners) < 2:
        result.gate = "skipped (one loss contender)"
        return []
    reference, *others = runners
    worst, problems = {}, []
    for other in others:
        worst[other] = 0.0
        for index, (a, b) in enumerate(zip(losses[reference], losses[other]), 1):
            rel = _relative_difference(a, b)
            worst[other] = max(worst[other], rel)
            if rel > GATE_RTOL:
                problems.append(f"  step {index}: {reference} {a!r} vs {other} {b!r} (relative difference {rel:.2e})")
    diffs = ", ".join(f"{name} {rel:.1e}" for name, rel in worst.items())
    result.gate = f"ok (max rel diff to {reference}: {diffs})"
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
    runnable = [c for c in result.contenders if c.steps]
    for contender in runnable:
        for _ in range(args.warmup):
            contender.steps.timed()
        # the fastest of a few short samples estimates the undisturbed step time
        estimate_us = min(take_sample(contender.steps.timed, 3, args.settle) for _ in range(3))
        contender.inner = max(1, min(MAX_INNER, math.ceil(args.sample_ms * 1e3 / estimate_us)))
    for round_index in range(args.rounds):
        for contender in runnable:
            contender.samples_us.append(take_sample(contender.steps.timed, contender.inner, args.settle))
        if sys.stderr.isatty():
            progress(f"[{result.workload}] round {round_index + 1}/{args.rounds}", end="\r")
    progress(f"[{result.workload}] timed {args.rounds} rounds")


# ---------------------------------------------------------------- report


def header(args: argparse.Namespace, others_cpu: str | None) -> list[str]:
    facts = {
        "load average before the run (1/5/15 min)": args.load_before,
        "CPU used by other processes while timing": others_cpu,
        "numpy": np.__version__,
        "torch": f"{torch.__version__} ({torch.get_num_threads()} threads, "
        f"CPU capability {torch.backends.cpu.get_cpu_capability()})",
        "jax": machine_info.jax_description(),
        "BLAS (threadpoolctl)": machine_info.blas_description(),
        "OpenBLAS/OpenMP environment": machine_info.openblas_env(),
        "nncompile": machine_info.nncompile_description(),
        "method": f"{args.rounds} rounds round-robin after {args.warmup} warm-up steps; "
        f"{args.settle:g} s settle + 1 untimed step before each sample; a sample is "
        f"the mean of `inner` steps (~{args.sample_ms:g} ms); gc off while timing; "
        f"float32, SGD lr={LEARNING_RATE}"
        + (f"; the whole benchmark run {args.runs} times, each in a fresh process" if args.runs > 1 else ""),
    }
    return machine_info.header_lines(
        "nncompile training-step benchmark", {key: value for key, value in facts.items() if value is not None}
    )


def run_tables(results: list[Result], level: str = "##") -> list[str]:
    """One run's tables, under headings of `level`: time per step of each contender, and the ratios of their
    medians with the loss gate."""
    lines = [
        f"{level} Time per training step (µs)",
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
        f"{level} Ratios of medians (below 1: the first named is faster)",
        "",
        "| workload | " + " | ".join(f"{a}/{b}" for a, b in RATIOS) + " | loss gate |",
        "| --- |" + " ---: |" * len(RATIOS) + " --- |",
    ]
    for result in results:
        ratios = [_format_ratio(_ratio(result.medians(), a, b)) for a, b in RATIOS]
        lines.append(f"| {result.workload} | {' | '.join(ratios)} | {result.gate} |")
    return lines


def summary(results: list[Result]) -> dict[str, dict]:
    """What --runs keeps of a run: per workload, each ratio (None when a contender did not run) and the gate."""
    return {
        result.workload: {
            "ratios": {f"{a}/{b}": _ratio(result.medians(), a, b) for a, b in RATIOS},
            "gate": result.gate,
        }
        for result in results
    }


def spread_table(runs: list[dict[str, dict]]) -> list[str]:
    lines = [
        f"## Spread over {len(runs)} runs",
        "",
        "Each run's ratio of medians; min / median / max over the runs.",
        "",
        "| workload | ratio | min | median | max | runs |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for workload in runs[0]:
        for a, b in RATIOS:
            values = _run_values(runs, workload, f"{a}/{b}")
            if not values:
                lines.append(f"| {workload} | {a}/{b} | n/a | n/a | n/a | 0 |")
                continue
            low, mid, high = min(values), float(np.median(values)), max(values)
            lines.append(f"| {workload} | {a}/{b} | {low:.2f} | {mid:.2f} | {high:.2f} | {len(values)} |")
    return lines


def targets_table(runs: list[dict[str, dict]]) -> list[str]:
    """Issue 16's targets against the measured ratio (the median over the runs); with several runs, how many met
    each target."""
    several = len(runs) > 1
    measured = "median ratio over the runs, ✓ if it meets the target; (k/n): runs that met it" if several else "ratio"
    lines = [
        "## Targets (issue 16)",
        "",
        f"Cells: {measured}; `report`: no target, only reported.",
        "",
        "| workload | " + " | ".join(TARGET_TITLES) + " |",
        "| --- |" + " --- |" * len(TARGET_TITLES),
    ]
    for workload in runs[0]:
        targets = TARGETS.get(workload, (None,) * len(TARGET_RATIOS))
        cells = []
        for (a, b), target in zip(TARGET_RATIOS, targets):
            values = _run_values(runs, workload, f"{a}/{b}")
            if not values:
                cells.append("n/a" if target is None else f"n/a (target ≤ {target})")
                continue
            ratio = float(np.median(values))
            if target is None:
                cells.append(f"{ratio:.2f} (report)")
                continue
            cell = f"{ratio:.2f} ≤ {target} {'✓' if ratio <= target else '✗'}"
            if several:
                cell += f" ({sum(value <= target for value in values)}/{len(runs)})"
            cells.append(cell)
        lines.append(f"| {workload} | {' | '.join(cells)} |")
    return lines


def _run_values(runs: list[dict[str, dict]], workload: str, ratio: str) -> list[float]:
    return [run[workload]["ratios"][ratio] for run in runs if run[workload]["ratios"][ratio] is not None]


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


def _ratio(medians: dict[str, float], top: str, bottom: str) -> float | None:
    return medians[top] / medians[bottom] if top in medians and bottom in medians else None


def _format_ratio(ratio: float | None) -> str:
    return "n/a" if ratio is None else f"{ratio:.2f}"


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
    parser.add_argument(
        "--runs",
        type=int,
        default=1,
        help="run the whole benchmark this many times, each in a fresh process, and report the spread (default 1)",
    )
    # Internal: a run started by --runs writes its tables and ratios to this JSON file instead of printing them.
    parser.add_argument("--run-json", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.workloads = [name.strip() for name in args.workloads.split(",") if name.strip()]
    unknown = [name for name in args.workloads if name not in WORKLOADS]
    if unknown:
        parser.error(f"unknown workload(s) {unknown}; choose from {list(WORKLOADS)}")
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    return args


def progress(message: str, end: str = "\n") -> None:
    print(message, end=end, file=sys.stderr, flush=True)


def report_unavailable(results: list[Result]) -> None:
    for result in results:
        for c in result.contenders:
            if c.unavailable:
                progress(f"[{result.workload}] {c.name}: unavailable ({c.unavailable})")


def run_benchmark(args: argparse.Namespace) -> tuple[list[Result], str] | None:
    """Build, gate and time every workload: the results and the CPU share other processes took, or None when the
    loss gate failed (the mismatch is printed)."""
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
        return None
    for result in results:
        progress(f"[{result.workload}] loss gate {result.gate}")

    start = machine_info.cpu_snapshot()
    for result in results:
        time_round_robin(result, args)
    return results, machine_info.others_cpu_share(start, machine_info.cpu_snapshot())


def run_in_fresh_processes(args: argparse.Namespace) -> str | None:
    """--runs N: the report of N runs of this script, each in its own process, or None if one failed."""
    options = ["--rounds", str(args.rounds), "--workloads", ",".join(args.workloads), "--settle", str(args.settle)]
    options += ["--sample-ms", str(args.sample_ms), "--warmup", str(args.warmup)]
    sections, runs = [], []
    with tempfile.TemporaryDirectory() as scratch:
        for index in range(1, args.runs + 1):
            progress(f"run {index} of {args.runs}")
            run_json = Path(scratch) / f"run_{index}.json"
            done = subprocess.run([sys.executable, __file__, *options, "--run-json", str(run_json)], check=False)
            if done.returncode:
                progress(f"run {index} failed (exit status {done.returncode})")
                return None
            run = json.loads(run_json.read_text())
            sections += [
                f"## Run {index} of {args.runs}",
                "",
                f"CPU used by other processes while timing: {run['others_cpu']}",
                "",
                *run["tables"],
                "",
            ]
            runs.append(run["summary"])
    lines = header(args, None) + sections + spread_table(runs) + [""] + targets_table(runs)
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    args = parse_args(argv)
    args.load_before = machine_info.load_average()
    if args.runs > 1:
        report = run_in_fresh_processes(args)
        if report is None:
            return 1
    else:
        outcome = run_benchmark(args)
        if outcome is None:
            return 1
        results, others_cpu = outcome
        if args.run_json:
            run = {"others_cpu": others_cpu, "tables": run_tables(results, "###"), "summary": summary(results)}
            args.run_json.write_text(json.dumps(run))
            return 0
        lines = header(args, others_cpu) + run_tables(results) + [""] + targets_table([summary(results)])
        report = "\n".join(lines) + "\n"
    print(report)
    if args.out:
        args.out.write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
