"""Loading runs from wandb, with the public API replaced by fakes at its boundary (no network).

The fakes hold what our runs really write (tests/test_wandb_logging.py checks an offline run
against the same functions): the member's config nested and again under flat dotted keys, and a
summary of summary.json's scalars beside the last eval/* and train/* values and wandb's own keys.
"""

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import wandb
import yaml

from analysis import AnalysisError, analyze, load_runs
from sae_sweeps.run_logging import TRAIN_JOB_TYPE, wandb_config, wandb_summary


@dataclass
class FakeRun:
    """The attributes of wandb.apis.public.Run that the loader reads."""

    id: str
    name: str
    state: str
    summary: dict[str, Any]
    config: dict[str, Any]
    group: str | None = "sweep-group"
    job_type: str | None = TRAIN_JOB_TYPE


@dataclass
class FakeApi:
    """wandb.Api replacement serving one project's runs."""

    runs_by_project: dict[str, list[FakeRun]]
    calls: list[tuple[str, dict]] = field(default_factory=list)

    def runs(self, path: str, filters: dict[str, Any] | None = None, **kwargs: Any) -> list[FakeRun]:
        self.calls.append((path, kwargs if filters is None else {"filters": filters, **kwargs}))
        if path not in self.runs_by_project:
            raise ValueError(f"Could not find project {path}\nmore detail")
        runs = self.runs_by_project[path]
        return runs if filters is None else [run for run in runs if run.group == filters["group"]]


def logged_summary(summary: dict[str, Any]) -> dict[str, Any]:
    """A finished member's wandb summary: summary.json's scalars, the last logged values, wandb's keys."""
    last_logged = {f"eval/{key}": summary[key] for key in ("l0", "fvu", "ce_loss_increase")}
    last_logged |= {"train/loss": 0.5, "tokens_trained": summary["tokens_trained"], "trainer/global_step": 97}
    return wandb_summary(summary) | last_logged | {"_runtime": 12, "_step": 6, "_timestamp": 1.7e9}


def runs_like_sweep(sweep_dir: Path) -> list[FakeRun]:
    """The fake sweep's completed runs as finished wandb runs, logged with the same summaries and configs."""
    paths = sorted(sweep_dir.glob("*/summary.json"), key=lambda path: int(path.parent.name))
    summaries = [json.loads(path.read_text()) for path in paths]
    return [
        FakeRun(f"id{index}", f"run-{index}", "finished", logged_summary(summary), wandb_config(summary["config"]), summary["sweep_id"])
        for index, summary in enumerate(summaries)
    ]


def sweep_analysis_run() -> FakeRun:
    """The sweep-level run our analysis callback logs: tables and figures, no SAE."""
    summary = {"completed": 16, "failed": 1, "frontier": {"_type": "table-file", "nrows": 12}}
    return FakeRun("ida", "sweep-analysis 15-00-00", "finished", summary, {"x": "l0", "y": "ce_loss_increase"}, "sweep-1", "sweep-analysis")


def other_state_runs(config: dict[str, Any]) -> list[FakeRun]:
    return [
        FakeRun("idf", "run-failed", "failed", {"error": "ValueError: bad k"}, config),
        FakeRun("idc", "run-crashed", "crashed", {}, config),
        FakeRun("idr", "run-running", "running", {"l0": 3.0}, config, group=None),
        FakeRun("idk", "run-killed", "killed", {}, config),
        FakeRun("ids", "run-self-failed", "finished", {"status": "failed", "error": "NaN loss"}, config),
    ]


@pytest.fixture
def fake_api(monkeypatch: pytest.MonkeyPatch, sweep_dir: Path) -> FakeApi:
    config = yaml.safe_load((sweep_dir / "0" / ".hydra" / "config.yaml").read_text())
    api = FakeApi({"team/saes": runs_like_sweep(sweep_dir) + other_state_runs(config) + [sweep_analysis_run()]})
    monkeypatch.setattr(wandb, "Api", lambda *args, **kwargs: api)
    return api


def test_wandb_states_map_to_statuses_and_failures_keep_their_error(fake_api: FakeApi):
    runs = load_runs("wandb:team/saes").set_index("run")
    assert (runs["status"] == "completed").sum() == 16
    assert runs.loc[["run-failed", "run-crashed", "run-self-failed"], "status"].eq("failed").all()
    assert runs.loc[["run-running", "run-killed"], "status"].eq("unfinished").all()
    assert runs.loc["run-failed", "error"] == "ValueError: bad k"
    assert runs.loc["run-crashed", "error"] == "wandb run state: crashed"
    assert runs.loc["run-self-failed", "error"] == "NaN loss"
    assert pd.isna(runs.loc["run-running", "l0"])  # metrics only count for completed runs
    assert runs.loc["run-0", "location"] == "team/saes/id0"
    assert runs.loc["run-0", "source"] == "wandb:team/saes"
    assert runs.loc["run-0", "sweep_id"] == "sweep-1"
    assert runs.loc["run-killed", "sweep_id"] == "sweep-group"  # no summary: the wandb group stands in


def test_wandb_and_local_runs_have_the_same_columns_dtypes_and_metrics(fake_api: FakeApi, sweep_dir: Path):
    from_wandb, from_disk = load_runs("wandb:team/saes"), load_runs(sweep_dir)
    assert list(from_wandb.columns) == list(from_disk.columns)
    assert from_wandb.dtypes.to_dict() == from_disk.dtypes.to_dict()
    completed_wandb = from_wandb[from_wandb["status"] == "completed"].reset_index(drop=True)
    completed_disk = from_disk[from_disk["status"] == "completed"].reset_index(drop=True)
    compared = ["sae_arch", "loss", "hook_layer", "l0", "ce_loss_increase"]
    pd.testing.assert_frame_equal(completed_wandb[compared], completed_disk[compared])


def test_wandb_runs_feed_the_same_analysis_and_are_fetched_in_one_listing(fake_api: FakeApi, sweep_dir: Path):
    from_wandb = analyze("wandb:team/saes", baseline="loss=local", at=[10.0, 50.0])
    from_disk = analyze(sweep_dir, baseline="loss=local", at=[10.0, 50.0])
    pd.testing.assert_frame_equal(from_wandb.comparison, from_disk.comparison)
    assert fake_api.calls == [("team/saes", {"lazy": False})]


def test_an_unreadable_wandb_project_is_a_one_line_error(fake_api: FakeApi):
    with pytest.raises(AnalysisError, match=r"^cannot read wandb project 'team/other': Could not find project team/other$"):
        load_runs("wandb:team/other")


def test_the_sweep_level_run_is_not_a_run_and_configs_come_back_nested(fake_api: FakeApi, sweep_dir: Path):
    runs = load_runs("wandb:team/saes").set_index("run")
    assert "sweep-analysis 15-00-00" not in runs.index and len(runs) == 21
    config = runs.loc["run-0", "config"]
    assert config["sae_arch"]["name"] == "topk" and not any("." in key for key in config)
    from_disk = load_runs(sweep_dir).set_index("run")
    assert config == from_disk.loc["0", "config"]


def test_a_group_selects_one_sweep_and_is_passed_as_a_filter(fake_api: FakeApi):
    runs = load_runs("wandb:team/saes/sweep-1")
    assert (runs["status"] == "completed").sum() == 16 and runs["sweep_id"].eq("sweep-1").all()
    assert fake_api.calls == [("team/saes", {"filters": {"group": "sweep-1"}, "lazy": False})]
    grouped = analyze("wandb:team/saes/sweep-1", baseline="loss=local", at=[10.0, 50.0])
    assert len(grouped.frontiers) > 0


def test_a_group_with_slashes_is_one_group_and_an_empty_one_says_so(fake_api: FakeApi):
    with pytest.raises(AnalysisError, match=r"^wandb project 'team/saes' group 'multirun/2026-11-23/x' has no training runs$"):
        load_runs("wandb:team/saes/multirun/2026-11-23/x")
