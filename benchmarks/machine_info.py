"""Markdown header lines that describe the machine and libraries a benchmark ran on.
Shared by bench_train_step.py and bench_compile.py so their reports read alike."""

import datetime
import os
import platform
import sys
import time


def header_lines(title: str, extra: dict[str, str] | None = None) -> list[str]:
    facts = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": f"{platform.platform()}, {cpu_model()}, {os.cpu_count()} cores",
        "python": platform.python_version(),
    }
    facts.update(extra or {})
    return [f"# {title}", ""] + [f"- {key}: {value}" for key, value in facts.items()] + [""]


def load_average() -> str:
    """1/5/15-minute load average: more than ~0.3 before a run means someone else is busy."""
    try:
        return " / ".join(f"{value:.2f}" for value in os.getloadavg())
    except OSError:
        return "unknown"


def cpu_snapshot() -> tuple[float, float, float] | None:
    """(wall s, CPU-busy s of the whole machine, CPU s of this process); None off Linux."""
    try:
        with open("/proc/stat") as stat:
            fields = [int(value) for value in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + fields[4]  # idle + iowait
    busy = (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")
    return time.monotonic(), busy, time.process_time()


def others_cpu_share(start, end) -> str:
    """How much of the machine other processes used between two cpu_snapshot() calls."""
    if start is None or end is None:
        return "unknown"
    wall, busy, own = (b - a for a, b in zip(start, end, strict=True))
    share = max(0.0, busy - own) / (wall * (os.cpu_count() or 1))
    return f"{share:.0%} of {os.cpu_count()} cores"


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def blas_description() -> str:
    """What threadpoolctl sees: library, version, kernel (architecture), threads."""
    from threadpoolctl import threadpool_info

    parts = []
    for pool in threadpool_info():
        details = [f"{pool.get('num_threads')} threads"]
        if pool.get("architecture"):
            details.insert(0, f"kernel {pool['architecture']}")
        if pool.get("threading_layer"):
            details.append(pool["threading_layer"])
        name = f"{pool.get('internal_api')} {pool.get('version') or ''}".strip()
        parts.append(f"{name} ({pool.get('prefix')}: {', '.join(details)})")
    return "; ".join(parts) or "none found"


def openblas_env() -> str:
    keys = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")
    found = [f"{key}={os.environ[key]}" for key in keys if key in os.environ]
    return ", ".join(found) or "none set"


def nncompile_description() -> str:
    try:
        import nncompile
    except Exception as exc:  # noqa: BLE001  any import failure is worth reporting
        return f"not importable ({type(exc).__name__}: {exc})"
    version = getattr(nncompile, "__version__", "unknown version")
    return f"{version} from {os.path.dirname(nncompile.__file__)}"


def jax_description() -> str:
    """JAX's version and the device its jit-compiled code runs on."""
    try:
        import jax
    except ImportError:
        return "not installed (pip install jax jaxlib)"
    return f"{jax.__version__} (device {jax.devices()[0]} of backend {jax.default_backend()})"


def add_repo_root_to_path() -> None:
    """Let `import nncompile` find the in-tree compiler without installing it."""
    repo_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if repo_root not in sys.path:
        sys.path.insert(1, repo_root)
