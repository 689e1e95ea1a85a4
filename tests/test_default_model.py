"""The real offline default (SmolLM2-135M on BBC news, TopK at resid_pre 6) for a hundred steps."""

import json

import pytest

from launch_helpers import assert_complete

pytestmark = pytest.mark.slow


def test_the_offline_default_trains_a_useful_sae_in_a_hundred_steps(launch, tmp_path):
    # Fewer probe documents: the probing LM pass over 1000 of them would double the test's time.
    launch(["train.tokens=51200", "train.batch_size=512", "data.eval_contexts=8",
            "train.eval_every_fraction=0", "data.probe_train_documents=100", "logger=none"])
    (path,) = tmp_path.glob("outputs/*/*/summary.json")
    summary = json.loads(path.read_text())
    assert_complete(summary)
    assert (summary["model"], summary["hook"]) == ("smollm2_135m", "blocks.6.hook_resid_pre")
    assert summary["tokens_trained"] == 100 * 512
    assert summary["l0"] == pytest.approx(32)
    assert summary["fvu"] < 0.5
    assert summary["ce_loss_recovered"] > 0.5  # at 100 steps; the full default run reaches > 0.9
    assert summary["sparse_probing_top20"] > 0.6  # chance is 0.5 (balanced accuracy); the full default run: 0.94
