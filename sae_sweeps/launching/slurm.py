"""The SLURM launcher of sweeps: hydra-submitit-launcher's, made to always come back.

- A `signal_delay_s` that is not shorter than the time limit is rejected before anything is
  submitted: SLURM would send the checkpoint signal as the job starts.
- Each job starts through `signals.py`, which holds the time-limit warning back until submitit
  handles it, so that a warning during the job's imports is not fatal.
- The sweep waits for a member's result only while SLURM still queues or runs its job. A member whose
  job has ended, or is no longer known to SLURM (no accounting, purged), and left no result for
  `lost_after_s` is reported lost, with its last checkpoint, and the sweep command returns; its
  analysis callback still runs. The plugin's own wait (`job.results()`) never returns then.
"""

from __future__ import annotations

import logging
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import submitit
from hydra.core.config_store import ConfigStore
from hydra.core.plugins import Plugins
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf, SlurmQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher
from omegaconf import OmegaConf, open_dict

from sae_sweeps.config_checks import ConfigError
from sae_sweeps.launching import signals
from sae_sweeps.run_directory import checkpoint_path

log = logging.getLogger(__name__)

# States of a job that will still run (again): waiting for these is waiting for a result.
LIVE_STATES = frozenset({
    "PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED",
    "RESIZING", "SUSPENDED", "SIGNALING", "STAGE_OUT", "RESV_DEL_HOLD",
})


def check_signal_delay(timeout_min: int, signal_delay_s: int) -> None:
    if signal_delay_s >= timeout_min * 60:
        raise ConfigError(
            f"hydra.launcher.signal_delay_s={signal_delay_s} must be less than the time limit "
            f"hydra.launcher.timeout_min={timeout_min} ({timeout_min * 60} s): the checkpoint signal "
            "would come as the job starts")


@dataclass
class ResilientSlurmQueueConf(SlurmQueueConf):
    """The plugin's SLURM options and this launcher's own (conf/hydra/launcher/submitit_slurm.yaml)."""

    _target_: str = "hydra_plugins.sae_sweeps_launcher.ResilientSlurmLauncher"
    lost_after_s: float = 60.0
    poll_s: float = 5.0


def register_launcher_schema() -> None:
    """Make Hydra check conf/hydra/launcher/submitit_slurm.yaml against this launcher's options
    instead of the plugin's, which it otherwise matches by name and which lacks `lost_after_s`."""
    Plugins.instance()  # the plugin scan (once per process) re-runs the plugin's registration: first
    ConfigStore.instance().store(group="hydra/launcher", name="submitit_slurm", node=ResilientSlurmQueueConf(),
                                 provider="sae_sweeps")


class Member(NamedTuple):
    """One sweep member and the SLURM job that runs it."""

    index: int
    """hydra.job.num: the member's number in the sweep."""
    overrides: list[str]
    """The member's overrides, as Hydra gives them to the launcher."""
    run_dir: Path
    """Its run directory (hydra.sweep.dir/hydra.sweep.subdir)."""
    job: submitit.Job
    """Its submitit job: "<array id>_<index>", or "<id>" when the sweep has one member."""


class ResilientSlurmLauncher(SlurmLauncher):
    """hydra-submitit-launcher's SlurmLauncher that rejects a bad signal delay, survives early
    signals and returns when every member has a result or is lost (see the module docstring)."""

    def __init__(self, lost_after_s: float = 60.0, poll_s: float = 5.0, **params: Any) -> None:
        super().__init__(**params)
        self.lost_after_s = lost_after_s
        self.poll_s = poll_s

    def __call__(self, *args: Any, **kwargs: Any) -> JobReturn:
        # In the job: submitit's handler for the warning is installed by now; a warning that came
        # early reaches it here and requeues the job before it has done anything.
        signals.deliver_deferred_warning_signal()
        return super().__call__(*args, **kwargs)

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        assert self.config is not None
        try:
            check_signal_delay(self.params["timeout_min"], self.params["signal_delay_s"])
        except ConfigError as err:  # one line and exit 2, as launch.py reports bad input
            print(f"error: config error: {err}", file=sys.stderr)
            sys.exit(2)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        if "mode" in self.config.hydra.sweep:
            os.chmod(sweep_dir, mode=int(str(self.config.hydra.sweep.mode), 8))
        log.info(f"Submitit 'slurm' sweep output dir : {sweep_dir}")
        indices = [initial_job_idx + i for i in range(len(job_overrides))]
        for idx, overrides in zip(indices, job_overrides):
            log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
        job_args = [(list(o), "hydra.sweep.dir", idx, f"job_id_for_{idx}", Singleton.get_state())
                    for idx, o in zip(indices, job_overrides)]
        jobs = self._executor().map_array(self, *zip(*job_args))
        members = [Member(idx, list(o), self._run_dir(o, idx), job) for idx, o, job in zip(indices, job_overrides, jobs)]
        return wait_for_members(members, self.lost_after_s, self.poll_s)

    def _executor(self) -> submitit.AutoExecutor:
        params = dict(self.params)
        executor = submitit.AutoExecutor(
            folder=params.pop("submitit_folder"),
            cluster="slurm",
            slurm_max_num_timeout=params.pop("max_num_timeout"),
            # submitit appends "-u -m submitit.core._submit <folder>"; signals.py reads the folder
            slurm_python=f"{shlex.quote(sys.executable)} -u {shlex.quote(signals.__file__)}",
        )
        generic = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(**{k if k in generic else f"slurm_{k}": v for k, v in params.items()})
        return executor

    def _run_dir(self, overrides: Sequence[str], idx: int) -> Path:
        assert self.hydra_context is not None and self.config is not None
        member_cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
        with open_dict(member_cfg.hydra.job):
            member_cfg.hydra.job.num = idx
        return Path(str(member_cfg.hydra.sweep.dir)) / str(member_cfg.hydra.sweep.subdir)


def rebuilt_launcher(state: dict[str, Any]) -> ResilientSlurmLauncher:
    """The launcher a job unpickles (see hydra_plugins/sae_sweeps_launcher.py)."""
    launcher = ResilientSlurmLauncher.__new__(ResilientSlurmLauncher)
    launcher.__dict__.update(state)
    return launcher


def wait_for_members(members: Sequence[Member], lost_after_s: float, poll_s: float) -> list[JobReturn]:
    """Each member's JobReturn once its job has left a result, or, once it has been gone from
    SLURM's live states for `lost_after_s` without one, a stand-in that reports it lost."""
    results: dict[int, JobReturn] = {}
    gone_since: dict[int, float] = {}
    while len(results) < len(members):
        states = live_job_states([m.job.job_id for m in members if m.index not in results])
        now = time.monotonic()
        for m in members:
            if m.index in results:
                continue
            if has_result(m.job):
                results[m.index] = collected(m)
            elif states is None or states.get(m.job.job_id) in LIVE_STATES:
                gone_since.pop(m.index, None)  # queued, running or requeued (or SLURM did not answer)
            elif now - gone_since.setdefault(m.index, now) >= lost_after_s:
                results[m.index] = reported_lost(m, states.get(m.job.job_id) or final_state(m.job.job_id))
        if len(results) < len(members):
            time.sleep(poll_s)
    return [results[m.index] for m in members]


def has_result(job: submitit.Job) -> bool:
    return job.task(0).paths.result_pickle.exists()  # task 0 reports for a multi-task (DDP) job


def collected(m: Member) -> JobReturn:
    """The member's own JobReturn, or a stand-in if its job raised outside our task function."""
    try:
        return m.job.task(0).result()
    except Exception as err:  # e.g. submitit's "timed-out too many times": report it, keep the sweep
        last_line = (str(err).strip().splitlines() or [type(err).__name__])[-1]
        return stand_in(m, f"its SLURM job {m.job.job_id} failed outside training: {last_line}")


def reported_lost(m: Member, state: str) -> JobReturn:
    return stand_in(m, f"its SLURM job {m.job.job_id} ended ({state}) without a result")


def stand_in(m: Member, what_happened: str) -> JobReturn:
    """A JobReturn that Hydra counts as done (so the sweep goes on to its end and its callbacks),
    after logging one line that says what happened and where the run can go on from."""
    last = checkpoint_path(m.run_dir)
    resume = f"its last checkpoint is {last}" if last.is_file() else "it left no checkpoint"
    log.error("member %d (%s) lost: %s; %s (rerun the command with resume=true to finish it)",
              m.index, " ".join(filter_overrides(m.overrides)) or "no overrides", what_happened, resume)
    return JobReturn(overrides=m.overrides, working_dir=str(m.run_dir), status=JobStatus.COMPLETED, _return_value=None)


def live_job_states(job_ids: Sequence[str]) -> dict[str, str] | None:
    """SLURM's state of each job it still knows ("<array id>_<task>" or "<id>"); None if the
    controller does not answer (no information: not a reason to give up on anyone)."""
    array_ids = sorted({job_id.split("_")[0] for job_id in job_ids})
    try:
        out = subprocess.run(["squeue", "-h", "-r", "--states=all", "-o", "%i|%T", "-j", ",".join(array_ids)],
                             capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return {} if "Invalid job id" in out.stderr else None
    return dict(line.split("|", 1) for line in out.stdout.split() if "|" in line)


def final_state(job_id: str) -> str:
    """How a job that SLURM's controller has forgotten ended, from its accounting, or why that is not known."""
    try:
        out = subprocess.run(["sacct", "-n", "-X", "-P", "-o", "State", "-j", job_id],
                             capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "state unknown: sacct did not run"
    states = out.stdout.split()
    return states[-1] if out.returncode == 0 and states else "state unknown: no SLURM accounting"
