"""Config composition of every group (bad input: tests/test_bad_input.py)."""

import pytest
from omegaconf import OmegaConf

from sae_sweeps.config_checks import ConfigError, check_config, check_group_choices

from launch_helpers import CONF, compose_config

GROUPS = ["model", "hook", "sae_arch", "loss", "sparsity", "data", "trainer", "logger"]


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize("group", GROUPS)
def test_every_option_of_every_group_composes_and_resolves(group):
    for option in options(group):
        extra = ["data.path=/tmp"] if (group, option) == ("data", "local_text") else []
        extra += ["hook.name=blocks.1.hook_mlp_out"] if (group, option) == ("hook", "custom") else []
        cfg = compose_config([f"{group}={option}", "model=tiny", *extra] if group != "model" else [f"model={option}"])
        OmegaConf.resolve(cfg)  # every interpolation resolves
        assert set(GROUPS) - {"logger"} <= set(cfg.keys())


def test_defaults_are_the_offline_topk_run_on_smollm2():
    cfg = compose_config([])
    assert (cfg.model.name, cfg.sae_arch.name, cfg.loss.name) == ("smollm2_135m", "topk", "local")
    assert cfg.hook.name == "blocks.6.hook_resid_pre"
    check_config(cfg)


def test_sparsity_coefficient_defaults_to_the_architectures_value_and_overrides():
    assert compose_config(["sae_arch=relu"]).sparsity.coefficient == compose_config(["sae_arch=relu"]).sae_arch.default_coefficient
    assert compose_config(["sae_arch=relu", "sparsity.coefficient=2.5"]).sparsity.coefficient == 2.5


@pytest.mark.parametrize("hook", ["resid_pre", "resid_mid", "resid_post", "mlp_out", "attn_out"])
def test_hook_presets_follow_the_layer_override(hook):
    cfg = compose_config([f"hook={hook}", "hook.layer=3"])
    assert cfg.hook.name == f"blocks.3.hook_{hook}"


@pytest.mark.parametrize("override", ["sae_arch=nope", "loss=local,nope", "model=gpt3"])
def test_unknown_group_option_is_one_line_listing_the_options(override):
    with pytest.raises(ConfigError) as err:
        check_group_choices([override], CONF)
    assert override.split("=")[0] in str(err.value) and "available:" in str(err.value)
