"""loss=local_then_e2e as a run: the budget splits at the stated token, the local phase reads the shared
activation cache, the fine-tune reads fresh contexts, a resume across the switch ends where an
uninterrupted run does, and the issue's sweep completes."""

from __future__ import annotations

import json
import math
import sys
from itertools import islice
from pathlib import Path

import pytest
import torch

from sae_sweeps.data.corpus import Corpus
from sae_sweeps.losses.local_then_e2e import LocalThenE2ELoss
from sae_sweeps.models import HookPoint
from sae_sweeps.run import train
from sae_sweeps.training.checkpointing import resumable_checkpoint
from sae_sweeps.training.module import NonFiniteLossError

from launch_helpers import assert_complete, compose_config

sys.path.insert(0, str(Path(__file__).parent / "data"))
from cache_helpers import HOOK, small_data_cfg  # noqa: E402

BATCH = 128  # tokens per step: 4 contexts of 32 in the fine-tune (small_data_cfg)
TOKENS, FRACTION = 6400, 0.25


def split_loss(corpus: Corpus) -> tuple[LocalThenE2ELoss, int, int]:
    loss = LocalThenE2ELoss(e2e_fraction=FRACTION)
    return loss, loss.steps_for_budget(corpus, TOKENS, BATCH), loss.local_steps


def test_the_budget_splits_at_the_stated_fraction(tiny_model):
    corpus = Corpus(small_data_cfg(), tiny_model)
    loss, n_steps, local_steps = split_loss(corpus)
    assert loss.phase_tokens(TOKENS) == (4800, 1600)
    assert local_steps == 4800 // BATCH  # local steps are whole batches of activation rows
    assert n_steps - local_steps == math.ceil(1600 / BATCH)  # fine-tune steps are whole batches of contexts


def test_the_stream_switches_at_the_local_phases_last_step_to_the_contexts_it_did_not_read(tiny_model):
    corpus = Corpus(small_data_cfg(), tiny_model)
    loss, n_steps, local_steps = split_loss(corpus)
    batches = list(islice(loss.training_stream(corpus, HOOK, BATCH, 0, n_steps), n_steps))
    assert [b.is_floating_point() for b in batches] == [True] * local_steps + [False] * (n_steps - local_steps)
    assert all(b.shape == (BATCH, 64) for b in batches[:local_steps])

    first = corpus.contexts_read_by_activation_stream(BATCH, local_steps)
    contexts = list(islice(corpus.training_contexts()(), first, first + 4 * (n_steps - local_steps)))
    assert torch.equal(torch.cat(batches[local_steps:]), torch.stack(contexts))
    # The local phase's rows came from the first `first` contexts; the fine-tune never sees them again.
    assert first * 31 >= local_steps * BATCH  # 31 ordinary tokens per context of 32 (BOS first)


@pytest.mark.parametrize("start", [3, 37, 38, 45])
def test_a_resumed_stream_gives_the_batches_an_uninterrupted_one_does_in_either_phase(tiny_model, start):
    corpus = Corpus(small_data_cfg(), tiny_model)
    loss, n_steps, local_steps = split_loss(corpus)
    assert local_steps == 37  # the cases: mid local, the last local step, the first and a later fine-tune step
    whole = list(islice(loss.training_stream(corpus, HOOK, BATCH, 0, n_steps), n_steps))
    resumed = list(islice(loss.training_stream(corpus, HOOK, BATCH, 0, n_steps, start), n_steps - start))
    assert len(resumed) == len(whole[start:]) and all(torch.equal(a, b) for a, b in zip(resumed, whole[start:]))


def test_the_local_phase_reads_the_activation_cache_and_runs_no_lm_pass(tiny_model, tmp_path, monkeypatch):
    corpus = Corpus(small_data_cfg(), tiny_model, activation_cache_root=tmp_path)
    loss, n_steps, local_steps = split_loss(corpus)
    built = list(islice(loss.training_stream(corpus, HOOK, BATCH, 0, n_steps), local_steps))  # builds the cache

    tokens_through_lm = []
    real = tiny_model.activations_at
    monkeypatch.setattr(tiny_model, "activations_at", lambda t, h: tokens_through_lm.append(t.numel()) or real(t, h))
    read = list(islice(loss.training_stream(corpus, HOOK, BATCH, 0, n_steps), local_steps))
    assert all(torch.equal(a, b) for a, b in zip(read, built))
    assert sum(tokens_through_lm) <= 2  # only the cache key's two-token width probe, no training text


TINY_RUN = ["model=tiny", "loss=local_then_e2e", "loss.e2e_fraction=0.25", "train.tokens=20000", "train.batch_size=512",
            "logger=none", "data.sparse_probing=false"]
LOCAL_STEPS = (20000 - 5000) // 512  # 29 of 39 steps


class FailsOnceInTheFineTune(LocalThenE2ELoss):
    """local_then_e2e that goes NaN on the fine-tune's `fail_at`-th step while `armed` (a crash after the switch)."""

    armed, fail_at, calls = False, 0, 0

    def __call__(self, sae, batch, *args, **kwargs):
        out = super().__call__(sae, batch, *args, **kwargs)
        cls = FailsOnceInTheFineTune
        if self.phase_of(batch) == "e2e" and cls.armed:
            cls.calls += 1
            if cls.calls == cls.fail_at:
                return out._replace(total=out.total * torch.nan)
        return out


# Checkpoints every 0.35 of the run (steps 13, 27) and a crash at step 31: the resume crosses the switch.
# Every 0.1 (..., 28, 32) and a crash at step 33: it resumes inside the fine-tune, with the balance from the checkpoint.
@pytest.mark.slow
@pytest.mark.parametrize("every, fail_at", [(0.35, 3), (0.1, 5)], ids=["across-the-switch", "inside-the-fine-tune"])
def test_a_resumed_run_ends_identical_to_an_uninterrupted_one(tmp_path, cache_dir, every, fail_at):
    overrides = [*TINY_RUN, f"paths.cache_dir={cache_dir}", f"train.checkpoint_every_fraction={every}",
                 "loss.module._target_=test_local_then_e2e.FailsOnceInTheFineTune"]
    cfg = compose_config(overrides)
    whole = train(cfg, tmp_path / "whole")

    FailsOnceInTheFineTune.armed, FailsOnceInTheFineTune.fail_at, FailsOnceInTheFineTune.calls = True, fail_at, 0
    try:
        with pytest.raises(NonFiniteLossError):
            train(cfg, tmp_path / "interrupted")
    finally:
        FailsOnceInTheFineTune.armed = False
    _, stopped_at = resumable_checkpoint(tmp_path / "interrupted")
    assert (stopped_at < LOCAL_STEPS) == (every == 0.35) and 0 < stopped_at < LOCAL_STEPS + fail_at
    resumed = train(cfg, tmp_path / "interrupted")

    assert whole["local_tokens"] == LOCAL_STEPS * 512 and whole["e2e_tokens"] > 0
    assert whole["local_tokens"] + whole["e2e_tokens"] == whole["tokens_trained"]
    compared = ("l0", "fvu", "ce_loss_increase", "kl", "dead_fraction", "tokens_trained", "local_tokens", "e2e_tokens",
                "train_loss_end", "final_sparsity_coefficient")
    assert {k: resumed[k] for k in compared} == {k: whole[k] for k in compared}


@pytest.mark.slow
def test_the_issues_sweep_completes_with_complete_summaries_and_one_lm_pass_for_the_local_phases(launch, tmp_path):
    launch(["-m", "model=tiny", "sae_arch=topk,relu", "loss=local_then_e2e", "loss.e2e_fraction=0.1,0.5", "logger=none",
            "train.tokens=8192", "train.batch_size=512", "data.sparse_probing=false", f"paths.activation_cache={tmp_path / 'acts'}"])
    summaries = [json.loads(p.read_text()) for p in tmp_path.glob("multirun/*/*/*/summary.json")]
    assert len(summaries) == 4
    for summary in summaries:
        assert_complete(summary, optional_present=False)
        fraction = summary["config"]["loss"]["e2e_fraction"]
        assert summary["local_tokens"] == (8192 - round(fraction * 8192)) // 512 * 512
        assert summary["e2e_tokens"] > 0 and summary["e2e_seconds"] > 0 and summary["local_seconds"] > 0
        # The phases' times add up to the training time (evaluations in neither).
        assert summary["local_seconds"] + summary["e2e_seconds"] == pytest.approx(summary["train_seconds"], rel=0.05, abs=0.5)
    builds = [p for p in tmp_path.glob("multirun/*/*/*/launch.log") if "activation cache: building" in p.read_text()]
    assert len(builds) == 1
