"""Reading runs from a wandb project through the wandb public API."""

from typing import Any

from analysis.errors import AnalysisError
from analysis.schema import COMPLETED, FAILED, SUMMARY_COLUMNS, UNFINISHED, run_row

WANDB_PREFIX = "wandb:"

# Every other state (running, pending, killed, preempted) is a run that did not get to the end.
STATUS_OF_STATE = {"finished": COMPLETED, "failed": FAILED, "crashed": FAILED}


def wandb_rows(project: str) -> list[dict[str, Any]]:
    """One runs-table row per run of the wandb project 'entity/project'."""
    import wandb  # imported here because only this source needs it, and it is slow to import

    if not project:
        raise AnalysisError(f"{WANDB_PREFIX} needs a project, as in {WANDB_PREFIX}entity/project")
    try:
        # lazy=False fetches summaries and configs with the run list instead of one request per run.
        runs = list(wandb.Api().runs(project, lazy=False))
    except Exception as error:  # auth, network and not-found errors come as many types; all mean "cannot read"
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise AnalysisError(f"cannot read wandb project {project!r}: {first_line}") from error
    if not runs:
        raise AnalysisError(f"wandb project {project!r} has no runs")
    return [wandb_row(run, project) for run in runs]


def wandb_row(run: Any, project: str) -> dict[str, Any]:
    """The runs-table row of one wandb public-API run."""
    status = STATUS_OF_STATE.get(run.state, UNFINISHED)
    # A run can exit cleanly after recording its own failure in its summary.
    if status == COMPLETED and run.summary.get("status", COMPLETED) != COMPLETED:
        status = FAILED
    summary = {key: run.summary.get(key) for key in SUMMARY_COLUMNS} if status == COMPLETED else {}
    # Runs that never wrote a summary still carry their sweep in the wandb group.
    summary["sweep_id"] = summary.get("sweep_id") or run.group
    return run_row(
        source=WANDB_PREFIX + project,
        run=run.name,
        location=f"{project}/{run.id}",
        status=status,
        error=(run.summary.get("error") or f"wandb run state: {run.state}") if status == FAILED else None,
        overrides=None,
        summary=summary,
        config=dict(run.config),
    )
