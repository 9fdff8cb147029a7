"""fit(comm=...) over MPI: `mpiexec -n 2` and `-n 3` (uneven shares) runs of tests/mpi_worker.py give the parameters
and history of single-process fit(), identical on every rank, and an error on one rank stops every rank."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import mpi_worker
import numpy as np
import pytest
from conftest import ROOT, readme_blocks

pytest.importorskip("mpi4py", reason="the MPI tests need mpi4py (pip install mpi4py mpich)")
MPIEXEC = shutil.which("mpiexec")
pytestmark = pytest.mark.skipif(MPIEXEC is None, reason="no mpiexec on PATH (pip install mpich)")
WORKER = Path(mpi_worker.__file__)


def mpiexec(ranks, out, mode, timeout=60):
    """Run the worker on `ranks` processes; a hang fails the test after `timeout` seconds."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    command = [MPIEXEC, "-n", str(ranks), sys.executable, "-m", "mpi4py", str(WORKER), str(out), mode]
    done = subprocess.run(command, check=False, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture(scope="module", params=[2, 3])
def fitted(request, tmp_path_factory):
    out = tmp_path_factory.mktemp(f"mpi{request.param}")
    mpiexec(request.param, out, "fit")
    return request.param, out


def rank_results(out, name, ranks):
    states = [dict(np.load(out / f"{name}.{rank}.npz")) for rank in range(ranks)]
    histories = [json.loads((out / f"{name}.{rank}.json").read_text()) for rank in range(ranks)]
    return states, histories


def assert_ranks_agree(states, histories):
    """Every rank ends with rank 0's state bit for bit (but the Dropout generator) and the same history."""
    for state, history in zip(states[1:], histories[1:]):
        assert state.keys() == states[0].keys()
        for key in state:
            if key != "buffers/rng":
                np.testing.assert_array_equal(state[key], states[0][key], err_msg=key)
        assert history == histories[0]


@pytest.mark.parametrize("name", list(mpi_worker.CASES))
def test_equals_single_process(fitted, name):
    ranks, out = fitted
    states, histories = rank_results(out, name, ranks)
    assert_ranks_agree(states, histories)
    net, history = mpi_worker.run(name)
    rtol = 1e-5 if mpi_worker.CASES[name][2] == "float32" else 1e-10
    reference = net.state_dict()
    assert reference.keys() == states[0].keys()
    for key, value in reference.items():
        if key.startswith(("params/", "optimizer/", "buffers/")) and key != "buffers/rng":
            scale = np.abs(value).max() if value.size else 0.0
            np.testing.assert_allclose(states[0][key], value, rtol=rtol, atol=rtol * scale, err_msg=key)
    assert histories[0].keys() == history.keys()
    for key, values in history.items():
        np.testing.assert_allclose(histories[0][key], values, rtol=rtol, err_msg=key)


def test_batch_statistics_and_dropout_agree_across_ranks(fitted):
    """BatchNorm (local batch statistics, running statistics averaged) and Dropout (a stream per rank): no
    single-process twin, but every rank ends with the same state."""
    ranks, out = fitted
    states, histories = rank_results(out, "normalized", ranks)
    assert_ranks_agree(states, histories)
    assert all(np.isfinite(value).all() for key, value in states[0].items() if key != "buffers/rng")
    assert len({states[rank]["buffers/rng"].tobytes() for rank in range(ranks)}) == ranks


def test_error_on_one_rank_stops_every_rank(tmp_path):
    mpiexec(3, tmp_path, "errors", timeout=60)
    results = [json.loads((tmp_path / f"errors.{rank}.json").read_text()) for rank in range(3)]
    assert results[1] == results[0] == results[2]
    found = results[0]
    assert found["bad_input"][:1] == ["ValueError"] and "wrong input shape" in found["bad_input"][1]
    assert found["bad_input"][2] == 2
    assert found["other_batch_size"][0] == "ValueError" and "batch_size" in found["other_batch_size"][1]
    assert found["non_finite"][0] == "FloatingPointError" and "the loss is inf" in found["non_finite"][1]
    assert found["callback_error"] == ["RuntimeError", "callback failed", 2]
    assert found["stop_on_one_rank"] is None and found["stop_on_one_rank_epochs"] == 2


def test_without_comm_the_generated_module_never_imports_mpi4py():
    code = mpi_worker.nncompile.compile_source(mpi_worker.MLP, "float64")
    assert "import mpi4py" not in code and "from mpi4py" not in code


class _OneRank:
    """A communicator of one process (duck-typed, no IN_PLACE): fit(comm=it) must equal fit()."""

    def Get_rank(self):
        return 0

    def Get_size(self):
        return 1

    def Bcast(self, buffer, root=0):
        pass

    def Allreduce(self, send, receive):
        receive[...] = send


def test_one_rank_duck_typed_communicator_equals_plain_fit():
    one, _ = mpi_worker.run("mlp_early_stop", comm=_OneRank())
    plain, _ = mpi_worker.run("mlp_early_stop")
    for key, value in plain.state_dict().items():
        np.testing.assert_array_equal(one.state_dict()[key], value, err_msg=key)


def test_not_a_communicator():
    with pytest.raises(TypeError, match="has no Get_rank"):
        mpi_worker.run("mlp", comm=object())


def test_readme_section_runs_as_written(tmp_path):
    """The README's "Training on several processes or machines": its train.py and its -n 2 commands."""
    (language, script), (_, commands), *_ = readme_blocks("## Training on several processes or machines")
    assert language == "python"
    (tmp_path / "train.py").write_text(script)
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for command in commands.strip().splitlines():
        done = subprocess.run(
            command, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False
        )
        assert done.returncode == 0, command + "\n" + done.stdout + done.stderr
    # Progress from rank 0 only: each epoch's line once.
    assert done.stdout.count("epoch  1/10") == 1
    assert float(done.stdout.splitlines()[-1].split("val_accuracy")[1]) > 0.8
    assert (tmp_path / "digits_mlp.npz").exists()
