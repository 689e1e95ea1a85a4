"""The table of bad inputs: each is refused with one line naming the key or file, exit status 2,
before any model or data loads. Grow the table whenever a new one is found (what the text-source
check tells apart in detail is in tests/data/test_text_source.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sae_sweeps.config_checks import ConfigError, check_config

from launch_helpers import REPO, compose_config

TINY = ["model=tiny", "logger=none"]
FILES = {"empty.txt": b"", "binary.txt": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "no_text_field.jsonl": b'{"body": "a record"}\n'}
"""Files the data.path cases point at, written into the test's DATA folder (DATA in the table)."""

BAD_INPUTS: dict[str, tuple[list[str], str]] = {
    # name: (overrides, the one line launch.py prints)
    "unknown architecture": (["sae_arch=nope"], "sae_arch=nope is not an option; available: batchtopk, gated, jumprelu, matryoshka, relu, topk"),
    "misspelt option": (["sae_arch=topK"], "sae_arch=topK is not an option; did you mean sae_arch=topk? available: batchtopk, gated, jumprelu, matryoshka, relu, topk"),
    "misspelt key": (["train.token=1000"], "train.token=1000: no such config key; did you mean train.tokens?"),
    "k that is not a number": (["sparsity.k=abc"], "sparsity.k=abc must be a whole number"),
    "k larger than the dictionary": (["sparsity.k=100000"], "sparsity.k=100000 is larger than the dictionary (d_sae=512)"),
    "k of zero": (["sparsity.k=0"], "sparsity.k=0 must be at least 1"),
    "negative coefficient": (["sae_arch=relu", "sparsity.coefficient=-0.1"], "sparsity.coefficient=-0.1 must be >= 0"),
    "JumpReLU target beyond the dictionary": (["sae_arch=jumprelu", "sparsity.target_l0=1000"], "sparsity.target_l0=1000 must be a number in (0, d_sae=512]"),
    "ReLU target beyond the dictionary": (["sae_arch=relu", "sparsity.target_l0=1000"], "sparsity.target_l0=1000 must be a number in (0, d_sae=512]"),
    "Gated target of zero": (["sae_arch=gated", "sparsity.target_l0=0"], "sparsity.target_l0=0 must be a number in (0, d_sae=512]"),
    "BatchTopK target that is not a number": (["sae_arch=batchtopk", "sparsity.target_l0=abc"], "sparsity.target_l0=abc must be a number in (0, d_sae=512]"),
    "Matryoshka target beyond the dictionary": (["sae_arch=matryoshka", "sparsity.target_l0=600"], "sparsity.target_l0=600 must be a number in (0, d_sae=512]"),
    "TopK target that is not a whole number": (["sae_arch=topk", "sparsity.target_l0=16.5"], "sparsity.target_l0=16.5 must be a whole number for topk (it sets k)"),
    "controller with no gain": (["sae_arch=relu", "sparsity.target_l0=16", "sparsity.controller.gain=0"], "sparsity.controller.gain=0 must be a number in (0, inf)"),
    "controller looking back in time": (["sae_arch=gated", "sparsity.target_l0=16", "sparsity.controller.horizon_steps=-5"], "sparsity.controller.horizon_steps=-5 must be a number in [0, inf]"),
    "per-loss horizon with no default": (["sae_arch=relu", "sparsity.target_l0=16", "~sae_arch.controller_horizon_steps.default"], "sae_arch.controller_horizon_steps by loss needs a `default` entry for the other losses, got ['e2e', 'e2e_ds']"),
    "per-loss horizon with no default, no target": (["sae_arch=relu", "~sae_arch.controller_horizon_steps.default"], "sae_arch.controller_horizon_steps by loss needs a `default` entry for the other losses, got ['e2e', 'e2e_ds']"),
    "controller that never adapts": (["sae_arch=gated", "sparsity.target_l0=16", "sparsity.controller.freeze_fraction=1"], "sparsity.controller.freeze_fraction=1 must be a number in (0, 1)"),
    "controller that starts after it freezes": (["sae_arch=relu", "sparsity.target_l0=16", "sparsity.controller.start_fraction=0.9"], "sparsity.controller.start_fraction=0.9 leaves no steps to adapt in before sparsity.controller.freeze_fraction=0.1"),
    "controller starting from no penalty": (["sae_arch=relu", "sparsity.target_l0=16", "sparsity.coefficient=0"], "sparsity.coefficient=0 must be > 0 with sparsity.target_l0 (the controller starts there and scales it)"),
    "no GPUs": (["trainer.devices=0"], "trainer.devices=0 must be a number >= 1, a list of device ids, or auto"),
    "unknown precision": (["trainer.precision=banana"], "trainer.precision=banana is not a precision Lightning knows; use one of 64-true, 32-true, 16-true, bf16-true, 16-mixed, bf16-mixed"),
    "unknown wandb mode": (["logger=wandb", "logger.mode=bogus"], "logger.mode=bogus must be one of online, offline, disabled, shared"),
    "every document held out": (["data.holdout_every=0"], "data.holdout_every=0 must be >= 2"),
    "no held-out contexts": (["data.eval_contexts=0"], "data.eval_contexts=0 must be >= 1"),
    "context longer than the model takes": (["data.context_size=100000"], "data.context_size=100000 is longer than tiny takes (model.n_ctx=256)"),
    "context of one token": (["data.context_size=1"], "data.context_size=1 must be >= 2"),
    "zero expansion factor": (["sae_arch.expansion_factor=0"], "sae_arch.expansion_factor=0 must be > 0"),
    "lr decay longer than the run": (["train.lr_decay_fraction=1.5"], "train.lr_decay_fraction=1.5 must be <= 1"),
    "zero encoder init scale": (["sae_arch.encoder_init_scale=0"], "sae_arch.encoder_init_scale=0 must be > 0"),
    "negative hook layer": (["hook.layer=-1"], "hook.layer=-1 is out of range: tiny has layers 0..1"),
    "hook layer past the last block": (["hook.layer=2"], "hook.layer=2 is out of range: tiny has layers 0..1"),
    "hook the model does not have": (["hook=custom", "hook.name=blocks.0.hook_nonsense"], "hook.name='blocks.0.hook_nonsense' is not a per-token block hook; expected blocks.<layer>.<one of hook_resid_pre, hook_resid_mid, hook_resid_post, hook_mlp_out, hook_attn_out, hook_mlp_in, hook_attn_in, mlp.hook_in, mlp.hook_pre, mlp.hook_post, ln1.hook_normalized, ln2.hook_normalized>"),
    "transcoder output that is not a hook": (["hook=transcoder", "hook.output=blocks.1.mlp_out"], "hook.output='blocks.1.mlp_out' is not a per-token block hook; expected blocks.<layer>.<one of hook_resid_pre, hook_resid_mid, hook_resid_post, hook_mlp_out, hook_attn_out, hook_mlp_in, hook_attn_in, mlp.hook_in, mlp.hook_pre, mlp.hook_post, ln1.hook_normalized, ln2.hook_normalized>"),
    "transcoder writing upstream of its input": (["hook=transcoder", "hook.output=blocks.0.hook_mlp_out"], "hook.output='blocks.0.hook_mlp_out' comes before hook.name='blocks.1.mlp.hook_in': a transcoder writes downstream of what it reads"),
    "transcoder output past the last block": (["hook=transcoder", "hook.layer=0", "hook.output=blocks.2.hook_mlp_out"], "hook.output=blocks.2.hook_mlp_out is out of range: the model has layers 0..1"),
    "skip path without a transcoder": (["+hook.skip=true"], "hook.skip=True needs a transcoder: a skip path maps hook.name to hook.output (use hook=transcoder)"),
    "skip that is not a yes or no": (["hook=transcoder", "hook.skip=sometimes"], "hook.skip=sometimes must be true or false"),
    "missing data path": (["data.path=/does/not/exist"], "data.path=/does/not/exist: no such file or folder, or no .txt/.jsonl/.json files in it"),
    "empty text file": (["data.path=DATA/empty.txt"], "data.path=DATA/empty.txt: DATA/empty.txt is empty; there is no text to train on"),
    "binary file as text": (["data.path=DATA/binary.txt"], "data.path=DATA/binary.txt: DATA/binary.txt is binary (a NUL byte in its first 8192 bytes), not text"),
    "jsonl without the text field": (["data.path=DATA/no_text_field.jsonl"], "data.text_column=text is not a field of DATA/no_text_field.jsonl (its first record has: body)"),
    "sparse probing that is not a yes or no": (["data.sparse_probing=maybe"], "data.sparse_probing=maybe must be true or false"),
    "no documents to fit probes on": (["data.probe_train_documents=0"], "data.probe_train_documents=0 must be >= 1"),
    "probe documents that are not a number": (["data.probe_held_out_documents=all"], "data.probe_held_out_documents=all must be a whole number"),
    "budget smaller than one batch": (["train.tokens=100"], "train.tokens=100 is smaller than one batch (train.batch_size=1024)"),
    "zero learning rate": (["train.lr=0"], "train.lr=0 must be > 0"),
    "resume that is not a yes or no": (["resume=maybe"], "resume=maybe must be true or false"),
    "negative KL coefficient": (["loss=e2e", "loss.kl_coefficient=-1"], "loss.kl_coefficient=-1 must be a number >= 0"),
    "downstream weight that is not a number": (["loss=e2e_ds", "loss.beta=lots"], "loss.beta=lots must be a number >= 0"),
    "fine-tune of the whole budget": (["loss=local_then_e2e", "loss.e2e_fraction=1"], "loss.e2e_fraction=1 must be a number between 0 and 1 (exclusive): use loss=local or loss=e2e for all of one kind"),
    "KL weight above one": (["loss=local_then_e2e", "loss.kl_weight=2"], "loss.kl_weight=2 must be a number from 0 to 1"),
    "unknown fine-tune loss": (["loss=local_then_e2e", "loss.finetune=kl"], "loss.finetune=kl must be one of e2e, e2e_ds"),
}


def case(name: str, tmp_path: Path) -> tuple[list[str], str]:
    """The table's overrides and line with DATA standing for a folder holding FILES."""
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    for file_name, content in FILES.items():
        (data / file_name).write_bytes(content)
    overrides, line = BAD_INPUTS[name]
    return [o.replace("DATA", str(data)) for o in overrides], line.replace("DATA", str(data))


# Group choices, unknown keys and resume= are refused by launch.py before a config is composed.
REFUSED_BEFORE_COMPOSING = ("sae_arch=nope", "sae_arch=topK", "train.token=", "resume=")


@pytest.mark.parametrize("name", [n for n, (overrides, _) in BAD_INPUTS.items() if not overrides[0].startswith(REFUSED_BEFORE_COMPOSING)])
def test_check_config_refuses_it_with_the_tables_line(name, tmp_path: Path):
    overrides, line = case(name, tmp_path)
    with pytest.raises(ConfigError) as err:
        check_config(compose_config([*TINY, *overrides]))
    assert str(err.value) == line


@pytest.mark.slow
@pytest.mark.parametrize("name", BAD_INPUTS)
def test_launch_refuses_it_in_one_line_with_exit_2_before_anything_loads(name, tmp_path: Path):
    overrides, line = case(name, tmp_path)
    cache = tmp_path / "cache"  # the tiny model is built here when it loads: it must stay empty
    env = os.environ | {"SAE_SWEEPS_CACHE": str(cache), "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, str(REPO / "launch.py"), *TINY, *overrides, f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [f"error: config error: {line}"]
    assert proc.stdout == ""
    assert not cache.exists() or not any(cache.rglob("*")), "something loaded before the input was refused"
