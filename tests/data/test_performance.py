"""train.performance switches (sae_sweeps/training/performance.py): parsed strictly, applied without
changing what a TopK SAE computes."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from sae_sweeps.saes.topk import TopKSAE
from sae_sweeps.training.performance import (
    PerformanceSettings,
    autocast_step,
    configure_process,
    keep_freed_memory,
    settings_from_cfg,
)


def test_settings_default_when_absent_and_reject_unknown_keys():
    assert settings_from_cfg(OmegaConf.create({"train": {}})) == PerformanceSettings()
    cfg = OmegaConf.create({"train": {"performance": {"compile": True, "sparse_decode": False}}})
    assert settings_from_cfg(cfg) == PerformanceSettings(compile=True, sparse_decode=False)
    with pytest.raises(ValueError, match="unknown key"):
        settings_from_cfg(OmegaConf.create({"train": {"performance": {"tf23": True}}}))


def test_cpu_process_settings_leave_cuda_flags_alone():
    before = torch.get_float32_matmul_precision()
    cfg = OmegaConf.create({"trainer": {"accelerator": "cpu"}, "train": {"performance": {"cpu_keep_freed_memory": False}}})
    configure_process(cfg)
    assert torch.get_float32_matmul_precision() == before
    assert keep_freed_memory() is True  # glibc on Linux


def test_sparse_decode_switch_keeps_the_topk_sae_s_outputs():
    torch.manual_seed(0)
    sae = TopKSAE(d_in=32, d_sae=1024, k=8)
    x = torch.randn(64, 32)
    dense = sae(x)
    assert sae.enable_fast_path("auto", torch.device("cpu"))
    sparse = sae(x)
    torch.testing.assert_close(sparse.reconstruction_BD, dense.reconstruction_BD)
    assert torch.equal(sparse.latents_BF, dense.latents_BF)
    assert not TopKSAE(d_in=32, d_sae=64, k=32).enable_fast_path("auto", torch.device("cpu"))  # k too large


def test_autocast_wrapper_runs_the_step_under_autocast():
    seen = []
    step = autocast_step(lambda: seen.append(torch.is_autocast_enabled("cpu")), "cpu")
    step()
    assert seen == [True]
