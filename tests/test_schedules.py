"""The learning-rate schedule of docs/method.md#schedules, on known numbers."""

import math

import pytest

from sae_sweeps.training.schedules import Schedule


def test_lr_is_warmed_up_held_then_decayed_over_the_final_steps_to_the_final_fraction():
    """Property: 100 steps, warm-up 5, decay over the final 20 to 10%: (s+1)/5 during the warm-up, 1 until
    step 80, the cosine from 1 to 0.1 over steps 80..100 (0.55 halfway, at step 90)."""
    schedule = Schedule(total_steps=100, lr_warmup_steps=5, lr_final_fraction=0.1, sparsity_warmup_steps=0, lr_decay_steps=20)
    assert [schedule.lr_factor(step) for step in range(5)] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    assert [schedule.lr_factor(step) for step in (5, 40, 80)] == [1.0, 1.0, 1.0]
    assert schedule.lr_factor(90) == pytest.approx(0.55)
    assert schedule.lr_factor(85) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 4)))
    assert schedule.lr_factor(100) == pytest.approx(0.1)


def test_without_decay_steps_the_cosine_spans_every_step_after_the_warm_up():
    """Property: lr_decay_steps None is the e2e paper's schedule: cosine from the end of the warm-up on."""
    schedule = Schedule(total_steps=105, lr_warmup_steps=5, lr_final_fraction=0.1, sparsity_warmup_steps=0)
    assert schedule.lr_factor(55) == pytest.approx(0.55)
    assert schedule.lr_factor(5) == pytest.approx(1.0)
