"""The console's token progress bar, driven by hand (no Trainer): it counts the module's tokens."""

from types import SimpleNamespace

import torch

from sae_sweeps.console import cache_build_bar
from sae_sweeps.training.progress import TokenProgressBar


def test_the_bar_counts_tokens_of_the_budget_and_ends_at_100_percent(capsys):
    bar = TokenProgressBar(total_tokens=20_000, description="topk-local-k32")
    module = SimpleNamespace(tokens_trained=torch.tensor(0))
    trainer = SimpleNamespace(global_step=0, max_steps=20, progress_bar_metrics={"loss": 1.5})
    bar.on_train_start(trainer, module)
    for step in range(1, 20):  # whole batches of 1024 stop short of the budget
        trainer.global_step, module.tokens_trained = step, torch.tensor(step * 1024)
        bar.on_train_batch_end(trainer, module, None, None, step)
    bar.on_train_end(trainer, module)
    final = capsys.readouterr().err.split("\r")[-1]
    assert final.startswith("topk-local-k32: 100%") and "19.5k/19.5k" in final and "tok/s" in final and "loss=1.5" in final
    assert "Epoch" not in final


def test_a_disabled_bar_prints_nothing_and_the_cache_bar_passes_items_through(capsys):
    bar = TokenProgressBar(total_tokens=100, description="x")
    bar.disable()
    trainer = SimpleNamespace(global_step=1, max_steps=1, progress_bar_metrics={})
    bar.on_train_start(trainer, SimpleNamespace(tokens_trained=0))
    bar.on_train_batch_end(trainer, SimpleNamespace(tokens_trained=100), None, None, 0)
    bar.on_train_end(trainer, SimpleNamespace(tokens_trained=100))
    assert capsys.readouterr().err == ""
    assert list(cache_build_bar(iter(range(5)), total=5)) == [0, 1, 2, 3, 4]
    assert "activation cache: 100%" in capsys.readouterr().err
