"""Transcoders through launch.py on the tiny model, as a user runs them: one run, and the issue's sweep over
architectures, losses and the skip switch."""

import json

import pytest
import torch

from launch_helpers import assert_complete

TRANSCODER = ["model=tiny", "hook=transcoder", "logger=none", "train.batch_size=512"]


@pytest.mark.slow
def test_a_transcoder_run_writes_a_complete_summary_and_a_transcoder_that_loads(launch, tmp_path):
    from sae_sweeps.saes.io import load_sae

    launch([*TRANSCODER, "sae_arch=topk", "train.tokens=20000"])
    (summary_path,) = tmp_path.glob("outputs/*/*/summary.json")
    summary = json.loads(summary_path.read_text())
    assert_complete(summary)
    assert (summary["kind"], summary["hook_input"], summary["hook"]) == ("transcoder", "blocks.1.mlp.hook_in", "blocks.1.hook_mlp_out")
    assert summary["train_loss_end"] < 0.7 * summary["train_loss_start"]  # it learned
    assert summary["fvu"] < 1.0  # better than predicting the output's mean
    cfg = json.loads((summary_path.parent / "sae" / "cfg.json").read_text())
    assert cfg["architecture"] == "sae_sweeps.topk_transcoder"  # SAELens has no TopK transcoder
    assert (cfg["d_in"], cfg["d_out"], cfg["hook_name_out"]) == (64, 64, "blocks.1.hook_mlp_out")
    assert load_sae(summary_path.parent / "sae")(torch.randn(3, 64)).reconstruction_BD.shape == (3, 64)


@pytest.mark.slow
def test_a_sweep_of_architectures_losses_and_the_skip_switch_completes_on_one_lm_pass(launch, tmp_path):
    """`-m hook=transcoder sae_arch=relu,topk,jumprelu loss=local,e2e hook.skip=false,true`: 12 complete
    summaries; the local members read one activation cache of (input, output) pairs, built by the first."""
    launch(["-m", *TRANSCODER, "sae_arch=relu,topk,jumprelu", "loss=local,e2e", "hook.skip=false,true",
            "train.tokens=4096", "data.sparse_probing=false", f"paths.activation_cache={tmp_path / 'acts'}"])
    summaries = [json.loads(p.read_text()) for p in tmp_path.glob("multirun/*/*/*/summary.json")]
    assert len(summaries) == 12
    for summary in summaries:
        assert_complete(summary, optional_present=False)
    assert sorted((s["sae_arch"], s["loss"], s["kind"]) for s in summaries) == sorted(
        (arch, loss, kind) for arch in ("relu", "topk", "jumprelu") for loss in ("local", "e2e")
        for kind in ("transcoder", "skip_transcoder")
    )
    (cache,) = (tmp_path / "acts").iterdir()
    assert json.loads((cache / "manifest.json").read_text())["key_fields"]["hook"] == "blocks.1.mlp.hook_in->blocks.1.hook_mlp_out"
    builds = [p for p in tmp_path.glob("multirun/*/*/*/launch.log") if "activation cache: building" in p.read_text()]
    assert len(builds) == 1
    (frontier,) = tmp_path.glob("multirun/*/*/analysis/frontier.csv")  # the sweep's own analysis
    assert "kind=skip_transcoder" in frontier.read_text() and "kind=transcoder" in frontier.read_text()
