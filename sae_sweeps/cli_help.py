"""`python launch.py --help`: our own page, with the config groups and their options read from
conf/; and "did you mean X" for unknown config keys and options on the command line.

Imports only the standard library and omegaconf (and nothing from sae_sweeps), so that --help
and a typo answer in well under a second.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

HELP_FLAGS = ("--help", "-h")
GLOBAL_PACKAGE = "# @package _global_"
# Shown in this order; a group added to conf/ later is listed after them.
GROUP_PURPOSES = {
    "model": "the frozen language model",
    "hook": "where the SAE reads (and a transcoder writes) activations (hook.layer=N moves it; hook=transcoder, hook.skip=true)",
    "sae_arch": "the SAE architecture (sae_arch.expansion_factor, sae_arch.d_sae)",
    "loss": "local reconstruction, or end-to-end KL (+ downstream MSE)",
    "sparsity": "sparsity.k, sparsity.coefficient, sparsity.target_l0",
    "data": "the text (data.path=FILE_OR_DIR for your own)",
    "trainer": "Lightning Trainer arguments (trainer.devices, trainer.precision)",
    "logger": "wandb (offline unless WANDB_MODE=online) or none",
    "experiment": "presets that set many groups at once: +experiment=NAME",
}
COMMON_COMMANDS = (
    ("python launch.py model=tiny train.tokens=20000", "a smoke test on a tiny random model, seconds"),
    ("python launch.py", "the default: TopK SAE on SmolLM2-135M, offline, a few minutes on a CPU"),
    ("python launch.py -m sae_arch=jumprelu,topk loss=local,e2e", "a 2x2 sweep; its frontier is plotted when it ends"),
)
MORE_COMMANDS = (
    ("python launch.py --cfg job", "the composed config: every key you can set"),
    ("python launch.py --hydra-help", "Hydra's own flags (launchers, multirun, logging)"),
    ("python -m analysis SWEEP_DIR", "frontiers and tables of finished sweeps (or wandb:ENTITY/PROJECT[/GROUP])"),
)


def wants_help(argv: list[str]) -> bool:
    return any(arg in HELP_FLAGS for arg in argv)


def config_groups(conf_dir: Path) -> dict[str, list[str]]:
    """Each config group (a folder of conf/, Hydra's own aside) and its options, sorted."""
    groups = {
        folder.name: sorted(path.stem for path in folder.glob("*.yaml"))
        for folder in conf_dir.iterdir()
        if folder.is_dir() and folder.name != "hydra"
    }
    known = [name for name in GROUP_PURPOSES if name in groups]
    return {name: groups[name] for name in known + sorted(set(groups) - set(known))}


def default_choices(conf_dir: Path) -> dict[str, str]:
    """group -> option chosen by the defaults list of conf/config.yaml."""
    defaults = OmegaConf.to_container(OmegaConf.load(conf_dir / "config.yaml")).get("defaults", [])
    return {key: str(value) for entry in defaults if isinstance(entry, dict) for key, value in entry.items()}


def help_page(conf_dir: Path) -> str:
    defaults = default_choices(conf_dir)
    lines = [
        "launch.py trains sparse autoencoders (SAEs) on a language model's activations and compares them.",
        "One command trains one SAE; -m sweeps any option or value, on this machine or on SLURM. Every run",
        "leaves summary.json, an SAELens-format sae/ folder and an offline wandb run; a sweep ends with its",
        "L0 vs CE-loss frontier in <sweep dir>/analysis and a table of its members.",
        "",
        "Most used:",
        *_command_lines(COMMON_COMMANDS),
        "",
        "Config groups: GROUP=OPTION (* the default); -m GROUP=A,B sweeps them:",
    ]
    groups = config_groups(conf_dir)
    width = max(map(len, groups))
    for name, options in groups.items():
        marked = "  ".join(f"{option}*" if defaults.get(name) == option else option for option in options)
        lines.append(f"  {name.ljust(width)}  {marked}")
        if name in GROUP_PURPOSES:
            lines.append(f"  {' ' * width}    {GROUP_PURPOSES[name]}")
    lines += [
        "",
        "Any value: KEY=VALUE, e.g. train.tokens=1_000_000 sparsity.k=64 hook.layer=3 train.lr=3e-4",
        "(train.*, paths.* and resume are in conf/config.yaml; a sweep of values: sparsity.k=16,32,64).",
        "",
        *_command_lines(MORE_COMMANDS),
    ]
    return "\n".join(lines)


def _command_lines(commands: tuple[tuple[str, str], ...]) -> list[str]:
    width = max(len(command) for command, _ in commands)
    return [f"  {command.ljust(width)}   {what}" for command, what in commands]


# -- did you mean ----------------------------------------------------------------------------------
def closest(name: str, candidates: list[str]) -> str | None:
    """The candidate nearest to `name`: a case-insensitive match, else difflib's closest."""
    for candidate in candidates:
        if candidate.lower() == name.lower():
            return candidate
    scored = [(difflib.SequenceMatcher(None, name, candidate).ratio(), candidate) for candidate in candidates]
    # Ties (e2d: e2e or e2e_ds?) go to the candidate of the closest length.
    best = sorted((-ratio, abs(len(candidate) - len(name)), candidate) for ratio, candidate in scored if ratio >= 0.6)
    return best[0][2] if best else None


def unknown_option_message(group: str, choice: str, available: list[str]) -> str:
    suggestion = closest(choice, available)
    guess = f"did you mean {group}={suggestion}? " if suggestion else ""
    return f"{group}={choice} is not an option; {guess}available: {', '.join(available)}"


def unknown_key_message(overrides: list[str], conf_dir: Path) -> str | None:
    """One line for the first `key=value` whose key no config in conf/ has, else None.

    A key counts as known if any option of its group has it. `+key=`, `~key`, `hydra.*` and
    group choices (`sae_arch=...`) are left to Hydra and to the group check.
    """
    groups = config_groups(conf_dir)
    tree: dict[str, Any] | None = None
    for override in overrides:
        key, sep, _ = override.partition("=")
        if not sep or override.startswith(("-", "+", "~")) or "/" in key or "@" in key:
            continue
        if key.split(".")[0] == "hydra" or key in groups:
            continue
        tree = tree if tree is not None else known_keys(conf_dir, groups)
        problem = _missing_part(key, tree)
        if problem is not None:
            return f"{override}: no such config key; {problem}"
    return None


def _missing_part(key: str, tree: dict[str, Any]) -> str | None:
    node: Any = tree
    parts = key.split(".")
    for depth, part in enumerate(parts):
        if not isinstance(node, dict):
            return None  # below a value that is not a mapping here (a null default): Hydra will say
        if part not in node:
            prefix = ".".join(parts[:depth])
            suggestion = closest(part, sorted(node))
            if suggestion is not None:
                corrected = [*parts[:depth], suggestion, *parts[depth + 1 :]]
                if _missing_part(".".join(corrected), tree) is not None:  # the rest does not fit either
                    corrected = corrected[: depth + 1]
                return f"did you mean {'.'.join(corrected)}?"
            where = f"{prefix}.* keys" if prefix else "top-level keys"
            return f"{where}: {', '.join(sorted(node))}"
        node = node[part]
    return None


def known_keys(conf_dir: Path, groups: dict[str, list[str]]) -> dict[str, Any]:
    """Every key any composition of conf/ can have: config.yaml's own, and under each group the
    union of its options' keys (options in Hydra's _global_ package add theirs at the top)."""
    tree = _yaml_keys(conf_dir / "config.yaml")
    for group, options in groups.items():
        for option in options:
            path = conf_dir / group / f"{option}.yaml"
            keys = _yaml_keys(path)
            is_global = path.read_text().lstrip().startswith(GLOBAL_PACKAGE)
            _merge(tree, keys if is_global else {group: keys})
    tree.pop("hydra", None)  # presets may set hydra.*, which Hydra checks itself
    return tree


def _yaml_keys(path: Path) -> dict[str, Any]:
    content = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    if not isinstance(content, dict):
        return {}
    content.pop("defaults", None)
    return content


def _merge(into: dict[str, Any], other: dict[str, Any]) -> None:
    for key, value in other.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        elif isinstance(value, dict) or key not in into:
            into[key] = value
