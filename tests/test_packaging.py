"""The built wheel carries the grammar and templates: install it into a fresh venv and compile an example there."""

from __future__ import annotations

import os
import subprocess
import sys
import venv

from conftest import ROOT


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
    # System site-packages supply numpy/jinja2/lark offline; nncompile itself must come from the wheel.
    venv.create(env_dir, with_pip=True, system_site_packages=True)
    python = env_dir / "bin" / "python"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--no-deps", "--no-index", "--force-reinstall", str(wheel)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert install.returncode == 0, install.stderr
    out = tmp_path / "digits_mlp.py"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
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
    where = subprocess.run(
        [str(python), "-c", "import nncompile, sys; print(nncompile.__file__)"],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
        env=env,
    )
    assert str(env_dir) in where.stdout, where.stdout + where.stderr
