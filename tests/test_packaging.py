"""The built wheel carries the grammar and templates: install it into a fresh venv and compile an example there."""

from __future__ import annotations

import importlib.util
import os
import site
import subprocess
import sys
import sysconfig
import venv

from conftest import ROOT

DEPENDENCIES = ("numpy", "jinja2", "lark")


def _site_dirs() -> list[str]:
    """Where this interpreter finds installed packages: its venv's site-packages (and the base interpreter's, if the
    venv includes them), or the system's and the user's. Not the repo and not PYTHONPATH."""
    paths = sysconfig.get_paths()
    dirs = [*site.getsitepackages(), paths["purelib"], paths["platlib"]]
    if site.ENABLE_USER_SITE:
        dirs.append(site.getusersitepackages())
    return [d for i, d in enumerate(dirs) if os.path.isdir(d) and d not in dirs[:i]]


def test_wheel_installs_and_compiles_in_a_fresh_venv(tmp_path):
    dist = tmp_path / "dist"
    build = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(dist), str(ROOT)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert build.returncode == 0, build.stdout[-2000:] + build.stderr[-2000:]
    wheel = next(dist.glob("nncompile-*.whl"))
    env_dir = tmp_path / "venv"
    # An isolated venv: `system_site_packages=True` would show the *base* interpreter's packages, which inside a
    # virtual environment are not the ones this test runs with (numpy/jinja2/lark are missing there).
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--no-deps", "--no-index", "--force-reinstall", str(wheel)],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )
    assert install.returncode == 0, install.stderr
    # Then, offline, the dependencies come from this interpreter's own package directories, listed in a .pth file.
    # They come after the venv's site-packages, so nncompile itself is the wheel's; their own .pth files are not
    # read, so an editable install of nncompile there stays out of the way.
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    ).stdout.strip()
    with open(os.path.join(purelib, "outer_site_packages.pth"), "w", encoding="utf-8") as pth:
        pth.writelines(d + "\n" for d in _site_dirs())
    out = tmp_path / "digits_mlp.py"
    compiled = subprocess.run(
        [str(env_dir / "bin" / "nncompile"), str(ROOT / "examples" / "digits_mlp.nn"), "-o", str(out)],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
        env=env,
    )
    assert compiled.returncode == 0, compiled.stderr
    assert "class DigitsMLP" in out.read_text()
    show = f"import importlib\nfor name in {DEPENDENCIES!r}: print(importlib.import_module(name).__file__)"
    where = subprocess.run(
        [str(python), "-c", show],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
        env=env,
    )
    assert where.stdout.split() == [importlib.util.find_spec(m).origin for m in DEPENDENCIES], where.stderr
    where = subprocess.run(
        [str(python), "-c", "import nncompile, sys; print(nncompile.__file__)"],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
        env=env,
    )
    assert str(env_dir) in where.stdout, where.stdout + where.stderr
