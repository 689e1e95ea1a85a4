"""launch.py end to end on the tiny model: the user's path, as a subprocess."""

import json

import pytest
import torch

from launch_helpers import assert_complete


def test_tiny_run_trains_and_writes_a_complete_summary_and_a_loadable_sae(launch, tmp_path):
    from sae_sweeps.saes.io import load_sae

    proc = launch(["model=tiny", "train.tokens=20000", "train.batch_size=512"])
    assert "run directory:" in proc.stdout and "ce_loss_recovered=" in proc.stdout
    (summary_path,) = tmp_path.glob("outputs/*/*/summary.json")
    summary = json.loads(summary_path.read_text())
    assert_complete(summary)
    assert summary["status"] == "completed"
    assert (summary["model"], summary["sae_arch"], summary["loss"]) == ("tiny", "topk", "local")
    assert summary["hook"] == "blocks.1.hook_resid_pre"
    assert summary["l0"] == pytest.approx(32, abs=1e-6)  # TopK with k = 32 on held-out tokens
    assert summary["tokens_trained"] == 20000 // 512 * 512
    assert summary["train_loss_end"] < 0.7 * summary["train_loss_start"]  # it learned
    assert summary["fvu"] < 0.9  # (a random tiny LM can even predict better with the SAE: no CE bound)
    sae_dir = summary_path.parent / "sae"
    cfg = json.loads((sae_dir / "cfg.json").read_text())
    assert cfg["architecture"] == "topk" and cfg["k"] == 32 and cfg["d_in"] == 64
    assert cfg["meta"]["hook_name"] == "blocks.1.hook_resid_pre"
    sae = load_sae(sae_dir)
    x = torch.randn(8, 64)
    assert torch.equal(sae(x).reconstruction_BD, load_sae(sae_dir)(x).reconstruction_BD)
    assert list(summary_path.parent.glob("wandb/offline-run-*")), "wandb offline run missing"


def test_same_seed_repeats_the_run_exactly(launch, tmp_path):
    args = ["model=tiny", "train.tokens=4096", "train.batch_size=512", "logger=none", "sae_arch=relu"]
    launch(args)
    launch(args)
    first, second = [json.loads(p.read_text()) for p in sorted(tmp_path.glob("outputs/*/*/summary.json"))]
    for key in ("l0", "fvu", "ce_loss_sae", "kl", "train_loss_end"):
        assert first[key] == second[key], key


def test_multirun_sweeps_the_sparsity_value_for_every_member(launch, tmp_path):
    eval_cache = tmp_path / "eval_cache"
    launch(["-m", "model=tiny", "sae_arch=topk", "sparsity.k=4,16", "train.tokens=4096",
            "train.batch_size=512", "logger=none", f"paths.eval_cache={eval_cache}"])
    # The held-out set's clean and zero-ablated passes and the sparse-probing documents' activations:
    # computed by the first member, read by the second.
    kinds = sorted(json.loads((entry / "manifest.json").read_text())["key"]["kind"] for entry in eval_cache.iterdir())
    assert kinds == ["reference_passes", "sparse_probing_activations"]
    logs = [p.read_text() for p in sorted(tmp_path.glob("multirun/*/*/*/launch.log"))]
    assert ["evaluation cache: computing" in log for log in logs] == [True, False]
    summaries = sorted((json.loads(p.read_text()) for p in tmp_path.glob("multirun/*/*/*/summary.json")),
                       key=lambda s: s["sparsity_value"])
    assert [s["sparsity_value"] for s in summaries] == [4, 16]
    assert [round(s["l0"]) for s in summaries] == [4, 16]
    assert summaries[0]["sweep_id"] == summaries[1]["sweep_id"] is not None
