"""The signal SLURM sends before a job's time limit, as the launcher configured it; and, run as a
script, what a sweep's SLURM job runs first:

    python -u sae_sweeps/launching/signals.py -u -m submitit.core._submit <submitit folder>

It is submitit's job runner with the warning signal held back (pending, not lost) until submitit has
installed its handler for it: the signal's default action kills a process, and with a time limit
close to `signal_delay_s` it can arrive while the job is still importing. Run by path, not with
`-m`, so that nothing but this file and submitit is imported first.
"""

from __future__ import annotations

import signal

from submitit import JobEnvironment


def warning_signal() -> signal.Signals:
    """What submitit asks SLURM to send `signal_delay_s` before the time limit (`--signal=<it>@<delay>`)
    and listens for in the job: SUBMITIT_PREEMPT_SIGNAL, USR2 unless set (the same in both places)."""
    return signal.Signals[f"SIG{JobEnvironment.USR_SIG}"]


def defer_warning_signal() -> None:
    signal.pthread_sigmask(signal.SIG_BLOCK, {warning_signal()})


def deliver_deferred_warning_signal() -> None:
    """Let a held-back warning signal through, once a handler is installed for it."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {warning_signal()})


if __name__ == "__main__":
    defer_warning_signal()
    import sys

    from submitit.core.submission import process_job

    process_job(sys.argv[-1])  # after submitit's own "-u -m submitit.core._submit" comes the folder
