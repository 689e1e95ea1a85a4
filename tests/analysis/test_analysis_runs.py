"""Loading runs from sweep directories on disk, and addressing run attributes by key."""

from pathlib import Path

import pytest

from analysis import AnalysisError, load_runs, status_summary
from analysis.groups import key_values
from analysis.schema import RUN_COLUMNS


def test_nested_sweeps_list_every_run_with_its_status(tmp_path: Path, make_sweep):
    first = make_sweep(tmp_path / "multirun" / "2026-11-23" / "15-00-00")
    second = make_sweep(tmp_path / "multirun" / "2026-11-24" / "deeper" / "09-30-00")
    runs = load_runs(tmp_path)
    expected = {f"multirun/2026-11-23/15-00-00/{name}": status for name, status in first.items()}
    expected |= {f"multirun/2026-11-24/deeper/09-30-00/{name}": status for name, status in second.items()}
    assert dict(zip(runs["run"], runs["status"])) == expected
    assert status_summary(runs) == "32 completed, 2 failed, 2 unfinished"


def test_runs_come_in_natural_order_with_the_same_columns_as_the_schema(sweep_dir: Path):
    runs = load_runs(sweep_dir)
    assert list(runs.columns) == list(RUN_COLUMNS)
    assert runs["run"].tolist() == [str(index) for index in range(18)]  # 2 before 10


def test_failed_runs_keep_their_error_and_resolved_config_but_no_metrics(sweep_dir: Path):
    failed = load_runs(sweep_dir).set_index("status").loc["failed"]
    assert failed["error"] == "RuntimeError: CUDA out of memory"
    assert failed["config"]["hook"]["name"] == "blocks.1.hook_resid_pre"  # written as blocks.${hook.layer}...
    # Without a summary, the choice columns come from the config.
    assert failed[["model", "hook", "hook_layer", "sae_arch", "loss"]].tolist() == ["tiny", "blocks.1.hook_resid_pre", 1, "topk", "e2e"]
    assert failed["overrides"] == "sae_arch=topk loss=e2e"
    assert failed[["l0", "ce_loss_increase"]].isna().all()


def test_a_summary_that_is_not_completed_means_unfinished(tmp_path: Path, make_run):
    make_run(tmp_path / "0", {"a": 1}, summary={"status": "running", "l0": 5.0})
    runs = load_runs(tmp_path)
    assert runs["status"].tolist() == ["unfinished"] and runs["l0"].isna().all()


def test_a_single_run_directory_is_a_valid_source(sweep_dir: Path):
    runs = load_runs(sweep_dir / "3")
    assert runs["run"].tolist() == ["3"] and runs["status"].tolist() == ["completed"]


def test_several_sources_are_concatenated(tmp_path: Path, make_sweep):
    make_sweep(tmp_path / "a")
    make_sweep(tmp_path / "b")
    assert set(load_runs([tmp_path / "a", str(tmp_path / "b")])["source"]) == {str(tmp_path / "a"), str(tmp_path / "b")}


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        ("missing", "does not exist"),
        ("file", "is not a directory"),
        ("empty", "no runs found under"),
        ("bad_json", r"summary.json is not valid JSON"),
    ],
)
def test_unusable_sources_raise_a_one_line_analysis_error(tmp_path: Path, make_run, layout: str, message: str):
    source = tmp_path / "source"
    if layout == "file":
        source.write_text("x")
    elif layout == "empty":
        (source / "not_a_run").mkdir(parents=True)
    elif layout == "bad_json":
        (make_run(source / "0", {"a": 1}) / "summary.json").write_text("{truncated")
    with pytest.raises(AnalysisError, match=message) as error:
        load_runs(source)
    assert "\n" not in str(error.value)


def test_keys_are_columns_first_then_dotted_config_paths(sweep_dir: Path):
    runs = load_runs(sweep_dir)
    assert key_values(runs, "sae_arch").iloc[0] == "topk"  # the flat column, although config has a sae_arch section
    assert key_values(runs, "data.context_size").iloc[0] == 128
    assert key_values(runs, "config.sae_arch.name").iloc[0] == "topk"
    assert key_values(runs, "data.layers").iloc[0] == "[1, 2]"  # lists become hashable text


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("data.nope", r"unknown group key 'data.nope'.*config sections: data, hook, loss"),
        ("config.sae_arch", r"'config.sae_arch' is a config section, not a value; use one of config.sae_arch.name"),
    ],
)
def test_bad_keys_say_what_would_be_valid(sweep_dir: Path, key: str, message: str):
    with pytest.raises(AnalysisError, match=message):
        key_values(load_runs(sweep_dir), key)
