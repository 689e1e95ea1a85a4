"""Constants and helpers shared by the data tests (small settings over the offline corpus)."""

from __future__ import annotations

from itertools import islice
from pathlib import Path

import torch
from omegaconf import OmegaConf

from sae_sweeps.models import HookPoint

REPO = Path(__file__).resolve().parents[2]
HOOK = HookPoint.parse("blocks.1.hook_resid_pre")

# Small enough for seconds on 2 cores, large enough that the shuffle buffer refills many times.
BATCH, LM_BATCH, BUFFER = 128, 8, 1024


def small_data_cfg(**overrides):
    cfg = OmegaConf.load(REPO / "conf" / "data" / "bbc_news.yaml")
    cfg.context_size, cfg.lm_batch_size, cfg.buffer_tokens = 32, LM_BATCH, BUFFER
    for key, value in overrides.items():
        cfg[key] = value
    return cfg


def take(stream, n):
    return list(islice(iter(stream), n))


def assert_same_batches(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert torch.equal(x, y)
