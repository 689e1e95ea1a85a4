"""`load_run`: a finished run directory rebuilt in one call, as the run had it."""

import json
from pathlib import Path

import pytest
import torch

from sae_sweeps.loaded_run import load_run


def test_a_loaded_run_reproduces_the_held_out_l0_its_summary_reports(launch, tmp_path: Path, cache_dir: Path, monkeypatch):
    """Property: the SAE, LM, hook and held-out contexts load_run rebuilds give the summary's held-out
    L0 again (mean active latents per ordinary held-out token), so they are the run's own."""
    launch(["model=tiny", "sae_arch=relu", "train.tokens=8192", "train.batch_size=512", "logger=none"])
    (run_dir,) = [path.parent for path in tmp_path.glob("outputs/*/*/summary.json")]
    monkeypatch.setenv("SAE_SWEEPS_CACHE", str(cache_dir))  # the tiny LM the run built, not a new one
    run = load_run(run_dir)
    assert run.summary == json.loads((run_dir / "summary.json").read_text())
    assert run.hook.name == "blocks.1.hook_resid_pre" and run.config.model.name == "tiny"
    tokens_NT = run.data.held_out_contexts()
    assert tokens_NT.shape == (run.config.data.eval_contexts, run.config.data.context_size)
    with torch.no_grad():
        acts_NTD = run.model.activations_at(tokens_NT, run.hook)
        ordinary_ND = acts_NTD[~run.model.special_token_mask(tokens_NT)]
        l0 = (run.sae.encode(ordinary_ND) > 0).sum(dim=-1).float().mean().item()
    assert l0 == pytest.approx(run.summary["l0"], rel=1e-5)


def test_a_directory_without_a_summary_is_refused_naming_the_missing_file(tmp_path: Path):
    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "config.yaml").write_text("model: {name: tiny}\n")
    with pytest.raises(FileNotFoundError, match=f"{tmp_path / 'summary.json'} is missing"):
        load_run(tmp_path)
