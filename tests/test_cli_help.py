"""`python launch.py --help` and "did you mean" for unknown config keys and options."""

import subprocess
import sys
from pathlib import Path

import pytest

from launch_helpers import REPO, run_launch
from sae_sweeps.cli_help import closest, config_groups, help_page, unknown_key_message
from sae_sweeps.config_checks import ConfigError, check_group_choices

CONF = REPO / "conf"


def test_the_help_page_lists_every_group_and_option_in_conf_with_the_defaults_marked():
    page = help_page(CONF)
    for group, options in config_groups(CONF).items():
        (line,) = [line for line in page.splitlines() if line.split()[:1] == [group]]
        assert sorted(option.rstrip("*") for option in line.split()[1:]) == options
    assert "smollm2_135m*" in page and "topk*" in page and "local*" in page and "wandb*" in page
    assert "python launch.py model=tiny train.tokens=20000" in page
    assert "python launch.py -m sae_arch=jumprelu,topk loss=local,e2e" in page
    assert "hydra" not in config_groups(CONF)


def test_the_help_module_imports_neither_torch_nor_the_rest_of_the_package():
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('cli_help', {str(REPO / 'sae_sweeps' / 'cli_help.py')!r})\n"
        "module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)\n"
        f"module.help_page(__import__('pathlib').Path({str(CONF)!r}))\n"
        "heavy = [name for name in ('torch', 'lightning', 'transformers', 'sae_sweeps') if name in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


@pytest.mark.parametrize(
    ("override", "suggestion"),
    [
        ("train.token=1000", "did you mean train.tokens?"),
        ("trainer.device=2", "did you mean trainer.devices?"),
        ("sparsity.kk=3", "did you mean sparsity.k?"),
        ("logger.mod=online", "did you mean logger.mode?"),  # a key only the wandb option has
        ("sae_arch.expansion=4", "did you mean sae_arch.expansion_factor?"),
        ("trian.tokens=5", "did you mean train.tokens?"),
    ],
)
def test_an_unknown_key_gets_one_line_naming_the_closest_key(override, suggestion):
    message = unknown_key_message(["-m", "model=tiny", override], CONF)
    assert message == f"{override}: no such config key; {suggestion}"


def test_known_keys_sweeps_and_what_hydra_checks_itself_pass():
    overrides = [
        "-m", "model=tiny", "train.tokens=1_000", "sparsity.k=4,16", "hook=custom", "hook.name=blocks.0.mlp.hook_post",
        "logger=none", "logger.mode=online", "+train.new_key=1", "++x=2", "~resume", "hydra.launcher.partition=gpu",
        "hydra/launcher=submitit_slurm", "+experiment=e2e_paper_gpt2_layer6", "e2e_paper.point=3",
        "data.path=/x", "trainer.devices=4", "paths.activation_cache=/y", "resume=true",
    ]
    assert unknown_key_message(overrides, CONF) is None


def test_a_key_with_nothing_close_lists_the_keys_at_that_level():
    message = unknown_key_message(["zzz=1"], CONF)
    assert message.startswith("zzz=1: no such config key; top-level keys: data, ") and "train" in message


def test_an_unknown_option_names_the_closest_and_the_group_check_raises_it():
    assert closest("topK", ["batchtopk", "topk"]) == "topk"
    assert closest("e2d", ["e2e", "e2e_ds", "local"]) == "e2e"
    with pytest.raises(ConfigError, match=r"^sae_arch=topK is not an option; did you mean sae_arch=topk\? available: batchtopk, "):
        check_group_choices(["-m", "sae_arch=relu,topK"], CONF)
    with pytest.raises(ConfigError, match=r"^train\.token=1000: no such config key; did you mean train\.tokens\?$"):
        check_group_choices(["train.token=1000"], CONF)


def test_launch_help_prints_our_page_and_typos_exit_2_with_one_line(tmp_path: Path, cache_dir: Path):
    proc = run_launch(["--help"], tmp_path, cache_dir, timeout=300)
    assert proc.stdout.startswith("launch.py trains sparse autoencoders") and "powered by Hydra" not in proc.stdout
    for args, expected in (
        (["train.token=1000"], "error: config error: train.token=1000: no such config key; did you mean train.tokens?"),
        (["sae_arch=topK"], "error: config error: sae_arch=topK is not an option; did you mean sae_arch=topk?"),
    ):
        proc = run_launch(args, tmp_path, cache_dir, check=False, timeout=300)
        assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].startswith(expected), proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1
