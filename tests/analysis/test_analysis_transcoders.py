"""Transcoders in the analysis: compared with SAEs where they write the same hook, never pooled with them."""

import json
from pathlib import Path

from conftest import run_config, run_summary, write_run

from analysis import analyze, frontiers_by_group, load_runs

MLP_OUT = "blocks.1.hook_mlp_out"
MLP_IN = "blocks.1.mlp.hook_in"


def write_transcoder(run_dir: Path, sae_arch: str, l0: float, ce_loss_increase: float, skip: bool, completed: bool = True) -> None:
    config = run_config(sae_arch, "local", l0, hook=MLP_IN)
    config["hook"] |= {"output": MLP_OUT, "skip": skip}
    summary = run_summary(sae_arch, "local", l0, ce_loss_increase, hook=MLP_OUT)
    summary |= {"hook_input": MLP_IN, "kind": "skip_transcoder" if skip else "transcoder", "config": config}
    write_run(run_dir, config, summary if completed else None)


def test_transcoders_and_saes_writing_one_hook_share_a_figure_but_not_a_frontier(tmp_path: Path):
    """A sweep of SAEs on hook_mlp_out, transcoders and skip transcoders into it: one site, one figure, and
    `kind` joins the group keys so that each kind keeps its own frontier."""
    runs = 0
    for kind, scale in (("sae", 1.0), ("transcoder", 1.4), ("skip_transcoder", 1.2)):
        for l0 in (10.0, 30.0, 100.0):
            run_dir = tmp_path / str(runs)
            if kind == "sae":
                summary = run_summary("topk", "local", l0, scale / l0**0.5, hook=MLP_OUT) | {"hook_input": MLP_OUT, "kind": "sae"}
                write_run(run_dir, run_config("topk", "local", l0, hook=MLP_OUT), summary)
            else:
                write_transcoder(run_dir, "topk", l0, scale / l0**0.5, skip=kind == "skip_transcoder")
            runs += 1
    frontiers = frontiers_by_group(load_runs(tmp_path))
    assert set(frontiers["hook"]) == {MLP_OUT}
    assert frontiers.groupby("group").size().to_dict() == {
        "sae_arch=topk, loss=local, kind=sae": 3,
        "sae_arch=topk, loss=local, kind=transcoder": 3,
        "sae_arch=topk, loss=local, kind=skip_transcoder": 3,
    }
    assert list(analyze(tmp_path).figures) == [f"tiny {MLP_OUT}"]


def test_a_transcoder_run_without_a_summary_is_listed_at_the_hook_it_writes(tmp_path: Path):
    """A failed or unfinished transcoder still says what it was: its output hook, its input, its kind (from its config)."""
    write_transcoder(tmp_path / "0", "relu", 30.0, 0.2, skip=True, completed=False)
    (tmp_path / "0" / "failure.json").write_text(json.dumps({"status": "failed", "error": "boom"}))
    run = load_runs(tmp_path).iloc[0]
    assert (run["hook"], run["hook_input"], run["kind"]) == (MLP_OUT, MLP_IN, "skip_transcoder")


def test_runs_written_before_transcoders_are_saes(tmp_path: Path):
    summary = run_summary("topk", "local", 30.0, 0.2)
    write_run(tmp_path / "0", run_config("topk", "local", 30.0), summary)  # no `kind` nor `hook_input` (summary_version 4)
    run = load_runs(tmp_path).iloc[0]
    assert run["kind"] == "sae" and run["hook_input"] == run["hook"]
