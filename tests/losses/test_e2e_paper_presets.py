"""The e2e paper presets (conf/experiment/e2e_paper_gpt2_layer*.yaml), composed with Hydra's
compose API only: no model or data is loaded."""

from __future__ import annotations


import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from sae_sweeps.config_checks import check_config
from sae_sweeps.run_config import dictionary_size

from launch_helpers import compose_config

LAYERS = {2: 2.5, 6: 2.5, 10: 0.05}  # layer -> the paper's downstream coefficient
LOSSES = ("local", "e2e", "e2e_ds")


def compose_preset(layer: int, *overrides: str, hydra_cfg: bool = False):
    return compose_config([f"+experiment=e2e_paper_gpt2_layer{layer}", *overrides], return_hydra_config=hydra_cfg)


def sweep_values(params) -> dict[str, list]:
    """Expand hydra.sweeper.params the way the basic sweeper does."""
    parser = OverridesParser.create()
    parsed = parser.parse_overrides([f"{key}={value}" for key, value in params.items()])
    return {o.key_or_group: list(o.sweep_iterator()) for o in parsed}


@pytest.mark.parametrize("layer", sorted(LAYERS))
def test_preset_holds_the_papers_settings(layer):
    """Property: each preset selects GPT-2, resid_pre at its layer, a ReLU (L1) SAE with 60 x d_model
    latents, lr 5e-4 with warm-up and cosine decay to 10%, grad clip 10, 16 x 1024-token batches,
    ~410M tokens, context 1024, and passes the config checks."""
    cfg = compose_preset(layer)
    assert cfg.model.name == "gpt2" and cfg.model.n_layers == 12 and cfg.model.d_model == 768
    assert cfg.hook.name == f"blocks.{layer}.hook_resid_pre"
    assert cfg.sae_arch.name == "relu" and cfg.sae_arch.expansion_factor == 60
    assert dictionary_size(cfg, cfg.model.d_model) == 46080
    assert cfg.train.lr == 5e-4 and cfg.train.lr_warmup_fraction > 0 and cfg.train.lr_final_fraction == 0.1 and cfg.train.lr_decay_fraction == 1.0
    assert cfg.trainer.gradient_clip_val == 10.0
    assert cfg.data.context_size == 1024 and cfg.train.batch_size == 16 * 1024
    assert cfg.train.tokens == 409_600_000
    assert cfg.data.hub_name is not None  # OpenWebText, as the paper
    check_config(cfg)


@pytest.mark.parametrize("layer", sorted(LAYERS))
def test_preset_sweeps_every_loss_over_its_own_grid(layer):
    """Property: `-m +experiment=...` sweeps local, e2e and e2e_ds, each over 7 increasing positive
    sparsity coefficients taken from its own grid (sparsity.coefficient indexes it); e2e keeps KL
    coefficient 1.0, e2e_ds gets 0.5 and a positive beta; local keeps the local loss."""
    params = compose_preset(layer, hydra_cfg=True).hydra.sweeper.params
    sweep = sweep_values(params)
    assert sweep["loss"] == list(LOSSES)
    points = sweep["e2e_paper.point"]
    assert points == list(range(7))
    for loss in LOSSES:
        ends = []
        for point in (points[0], points[-1]):
            cfg = compose_preset(layer, f"loss={loss}", f"e2e_paper.point={point}")
            assert cfg.loss.name == loss
            ends.append(cfg.sparsity.coefficient)
            OmegaConf.to_container(cfg, resolve=True)  # everything resolves
        grid = list(cfg.e2e_paper.grid[loss])
        assert ends == [grid[0], grid[-1]]
        assert len(grid) == 7 and all(c > 0 for c in grid) and grid == sorted(set(grid)), (loss, grid)
    e2e = compose_preset(layer, "loss=e2e")
    e2e_ds = compose_preset(layer, "loss=e2e_ds")
    assert e2e.loss.module.kl_coefficient == 1.0
    assert e2e_ds.loss.module.kl_coefficient == 0.5 and e2e_ds.loss.module.beta > 0
    assert compose_preset(layer, "loss=local").loss.module._target_.endswith("LocalLoss")


def test_beta_follows_the_paper_across_layers():
    """Property: the converted betas keep the paper's ordering: layer 10's (0.05) is below layers 2 and 6's (2.5)."""
    betas = {layer: compose_preset(layer, "loss=e2e_ds").loss.module.beta for layer in LAYERS}
    assert betas[10] < min(betas[2], betas[6])
