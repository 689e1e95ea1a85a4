"""Reading runs from a wandb project through the wandb public API."""

from typing import Any

from analysis.errors import AnalysisError
from analysis.schema import COMPLETED, FAILED, SUMMARY_COLUMNS, UNFINISHED, run_row

WANDB_PREFIX = "wandb:"

SWEEP_ANALYSIS_JOB_TYPE = "sweep-analysis"

# Every other state (running, pending, killed, preempted) is a run that did not get to the end.
STATUS_OF_STATE = {"finished": COMPLETED, "failed": FAILED, "crashed": FAILED}


def wandb_rows(source: str) -> list[dict[str, Any]]:
    """One runs-table row per training run of 'entity/project', or of one group (one sweep) with
    'entity/project/group' (a sweep's group is its directory, slashes and all)."""
    import wandb  # imported here because only this source needs it, and it is slow to import

    if not source:
        raise AnalysisError(f"{WANDB_PREFIX} needs a project, as in {WANDB_PREFIX}entity/project")
    project, group = split_source(source)
    # lazy=False fetches summaries and configs with the run list instead of one request per run.
    query: dict[str, Any] = {"lazy": False} if group is None else {"filters": {"group": group}, "lazy": False}
    try:
        runs = list(wandb.Api().runs(project, **query))
    except Exception as error:  # auth, network and not-found errors come as many types; all mean "cannot read"
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise AnalysisError(f"cannot read wandb project {project!r}: {first_line}") from error
    # The sweep-level run holds the analysis of the others, not an SAE.
    runs = [run for run in runs if getattr(run, "job_type", None) != SWEEP_ANALYSIS_JOB_TYPE]
    if not runs:
        where = f"wandb project {project!r}" + (f" group {group!r}" if group else "")
        raise AnalysisError(f"{where} has no training runs")
    return [wandb_row(run, project) for run in runs]


def split_source(source: str) -> tuple[str, str | None]:
    """'entity/project/group...' -> ('entity/project', 'group...'); no group -> None."""
    parts = source.split("/", 2)
    return "/".join(parts[:2]), (parts[2] if len(parts) == 3 and parts[2] else None)


def nested_config(config: dict[str, Any]) -> dict[str, Any]:
    """The run's config as our runs log it, without the flat copies of its leaves ("sae_arch.name")."""
    return {key: value for key, value in config.items() if "." not in key}


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
        config=nested_config(dict(run.config)),
    )
