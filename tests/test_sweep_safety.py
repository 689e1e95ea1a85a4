"""Sweeps that never lose or mix up results, without a cluster: one trainer per run directory,
temporary checkpoint names unique per writer, a signal delay that fits the time limit, early
time-limit warnings that are not fatal, and members that die without a result reported lost."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from hydra.core.utils import JobStatus

from sae_sweeps.config_checks import ConfigError
from sae_sweeps.launching import slurm
from sae_sweeps.launching.signals import warning_signal
from sae_sweeps.training.checkpointing import checkpoint_path, temporary_path
from sae_sweeps.training.run_lock import RunInProgress, lock_path, one_trainer_per_run_dir, run_dir_lock

from launch_helpers import REPO

HOLD_LOCK = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from sae_sweeps.training.run_lock import run_dir_lock
    with run_dir_lock(Path(sys.argv[1])):
        print("locked", flush=True)
        time.sleep(600)
""")


def files_and_times(directory: Path) -> dict[str, int]:
    return {str(p.relative_to(directory)): p.stat().st_mtime_ns for p in directory.rglob("*")}


@pytest.fixture
def lock_holder(tmp_path: Path):
    """A separate process holding tmp_path's run lock until the test ends (or kills it)."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    yield proc
    proc.kill()
    proc.wait()


def test_a_second_trainer_of_a_run_directory_says_who_trains_it_and_touches_nothing(tmp_path, lock_holder, caplog):
    (tmp_path / "checkpoints").mkdir()
    checkpoint_path(tmp_path).write_bytes(b"the first trainer's checkpoint")
    before = files_and_times(tmp_path)
    trained = []
    train = one_trainer_per_run_dir(lambda cfg, run_dir: trained.append(run_dir) or {"status": "completed"})
    with caplog.at_level(logging.WARNING):
        assert train(None, tmp_path) == {}
    assert trained == [] and files_and_times(tmp_path) == before
    (message,) = [r.getMessage() for r in caplog.records]
    assert message == f"{tmp_path} is being trained by pid {lock_holder.pid} on host {socket.gethostname()}: not training it again"


def test_a_sigkilled_trainer_leaves_no_stale_lock(tmp_path, lock_holder):
    with pytest.raises(RunInProgress):
        with run_dir_lock(tmp_path):
            pass
    lock_holder.kill()
    lock_holder.wait()
    with run_dir_lock(tmp_path):
        assert lock_path(tmp_path, 0).read_text() == f"pid {os.getpid()} on host {socket.gethostname()}\n"


def test_each_rank_of_a_ddp_run_has_its_own_lock(tmp_path):
    with run_dir_lock(tmp_path, rank=0), run_dir_lock(tmp_path, rank=1):
        assert lock_path(tmp_path, 1).name == ".train.rank1.lock"


def test_temporary_checkpoint_names_differ_between_writers_and_stay_beside_the_checkpoint(tmp_path):
    path = checkpoint_path(tmp_path)
    child = subprocess.run(
        [sys.executable, "-c", f"import os; from pathlib import Path; from sae_sweeps.training.checkpointing import "
                               f"temporary_path; print(os.getpid(), temporary_path(Path({str(path)!r})))"],
        capture_output=True, text=True, check=True)
    child_pid, child_tmp = child.stdout.split()
    names = {temporary_path(path), temporary_path(path), Path(child_tmp)}
    assert len(names) == 3
    assert all(p.parent == path.parent and p.name.startswith(".last.ckpt.") and p.suffix == ".tmp" for p in names)
    assert f".{socket.gethostname()}.{child_pid}." in child_tmp and f".{os.getpid()}." in str(temporary_path(path))


def test_a_signal_delay_not_shorter_than_the_time_limit_is_rejected():
    slurm.check_signal_delay(timeout_min=2, signal_delay_s=119)
    with pytest.raises(ConfigError, match=r"hydra.launcher.signal_delay_s=120 must be less than the time limit "
                                          r"hydra.launcher.timeout_min=2 \(120 s\)"):
        slurm.check_signal_delay(timeout_min=2, signal_delay_s=120)


def test_launch_rejects_a_signal_delay_beyond_the_time_limit_in_one_line_before_submitting(launch, tmp_path):
    proc = launch(["-m", "hydra/launcher=submitit_slurm", "model=tiny", "logger=none",
                   "hydra.launcher.timeout_min=1", "hydra.launcher.signal_delay_s=120"], check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: config error: hydra.launcher.signal_delay_s=120 must be less than the time limit "
        "hydra.launcher.timeout_min=1 (60 s): the checkpoint signal would come as the job starts")
    assert not list(tmp_path.glob("multirun/*/*/.submitit"))  # nothing was submitted


def test_a_warning_signal_before_any_handler_waits_for_the_handler_instead_of_killing_the_process():
    # Loaded by path, as a job runs it: before anything (such as torch) starts threads that would
    # take the signal unblocked.
    script = textwrap.dedent(f"""
        import os, runpy, signal
        entry = runpy.run_path({str(REPO / "sae_sweeps" / "launching" / "signals.py")!r})
        defer_warning_signal, deliver_deferred_warning_signal, warning_signal = (
            entry["defer_warning_signal"], entry["deliver_deferred_warning_signal"], entry["warning_signal"])
        defer_warning_signal()
        os.kill(os.getpid(), warning_signal())  # as SLURM would, while the job still imports
        seen = []
        signal.signal(warning_signal(), lambda signum, frame: seen.append(signum))
        deliver_deferred_warning_signal()
        print(seen == [warning_signal()])
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert (out.returncode, out.stdout.strip()) == (0, "True"), out.stderr[-2000:]


def test_the_warning_signal_is_the_one_submitit_asks_slurm_for():
    from submitit.slurm.slurm import _make_sbatch_string

    sbatch = _make_sbatch_string(command="true", folder="/tmp/x", signal_delay_s=90)
    assert f"#SBATCH --signal={warning_signal().name.removeprefix('SIG')}@90" in sbatch


class FakeJob:
    """A submitit job as the launcher sees it: an id, a result file, and a result once it exists."""

    def __init__(self, job_id: str, result_file: Path, result: object = None) -> None:
        self.job_id = job_id
        self.paths = SimpleNamespace(result_pickle=result_file)
        self._result = result

    def task(self, index: int) -> FakeJob:
        return self

    def result(self) -> object:
        return self._result


def test_a_member_that_died_without_a_result_is_reported_lost_with_its_checkpoint_and_the_wait_ends(tmp_path, monkeypatch, caplog):
    lost_dir, running_dir = tmp_path / "0", tmp_path / "1"
    checkpoint_path(lost_dir).parent.mkdir(parents=True)
    checkpoint_path(lost_dir).write_bytes(b"checkpoint")
    running_result = tmp_path / "1_result.pkl"
    finished = SimpleNamespace(status=JobStatus.COMPLETED, return_value=0.5)
    members = [
        slurm.Member(0, ["sae_arch=relu"], lost_dir, FakeJob("7_0", tmp_path / "0_result.pkl")),
        slurm.Member(1, ["sae_arch=topk"], running_dir, FakeJob("7_1", running_result, finished)),
    ]
    started = time.monotonic()

    def states(job_ids):
        # 7_0 has left SLURM (no accounting: forgotten); 7_1 runs for 1 s, then leaves its result
        if time.monotonic() - started > 1.0:
            running_result.write_bytes(b"done")
        return {"7_1": "RUNNING"}

    monkeypatch.setattr(slurm, "live_job_states", states)
    monkeypatch.setattr(slurm, "final_state", lambda job_id: "state unknown: no SLURM accounting")
    with caplog.at_level(logging.ERROR):
        lost, done = slurm.wait_for_members(members, lost_after_s=0.3, poll_s=0.05)
    assert done is finished
    assert lost.status == JobStatus.COMPLETED and lost.return_value is None and lost.working_dir == str(lost_dir)
    (message,) = [r.getMessage() for r in caplog.records]
    assert message == (f"member 0 (sae_arch=relu) lost: its SLURM job 7_0 ended (state unknown: no SLURM accounting) "
                       f"without a result; its last checkpoint is {checkpoint_path(lost_dir)} "
                       "(rerun the command with resume=true to finish it)")


def test_a_member_is_not_given_up_while_slurm_does_not_answer(tmp_path, monkeypatch):
    result = tmp_path / "result.pkl"
    member = slurm.Member(0, [], tmp_path, FakeJob("8_0", result, "finished"))
    polls = []

    def no_answer(job_ids):
        polls.append(1)
        if len(polls) > 10:
            result.write_bytes(b"done")
        return None

    monkeypatch.setattr(slurm, "live_job_states", no_answer)
    assert slurm.wait_for_members([member], lost_after_s=0.0, poll_s=0.01) == ["finished"]


def test_the_launcher_config_is_checked_against_this_launchers_options():
    proc = subprocess.run([sys.executable, str(REPO / "launch.py"), "hydra/launcher=submitit_slurm", "model=tiny",
                           "hydra.launcher.lost_after_s=5", "--cfg", "hydra", "-p", "hydra.launcher"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "lost_after_s: 5" in proc.stdout and "_target_: hydra_plugins.sae_sweeps_launcher.ResilientSlurmLauncher" in proc.stdout

