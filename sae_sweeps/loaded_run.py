"""`load_run`: a finished run directory rebuilt in one call (the SAE, the frozen LM it was trained
on, its hook point and its held-out text), for the work that comes after training."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from sae_sweeps.data.corpus import Corpus
from sae_sweeps.models import HookPoint, LanguageModel
from sae_sweeps.run import load_model
from sae_sweeps.saes import SparseAutoencoder
from sae_sweeps.saes.io import load_sae
from sae_sweeps.summary import SUMMARY_FILENAME

CONFIG_PATH = Path(".hydra") / "config.yaml"
SAE_DIRECTORY = "sae"


@dataclass
class LoadedRun:
    """A finished run, rebuilt from what its directory saved."""

    run_dir: Path
    """The run directory."""
    config: DictConfig
    """The run's resolved config (.hydra/config.yaml)."""
    summary: dict[str, Any]
    """Its summary.json: what it measured."""
    sae: SparseAutoencoder
    """The saved SAE in eval mode, on the LM's device, taking raw activations (the input scale is folded in)."""
    model: LanguageModel
    """The frozen LM it was trained on."""
    hook: HookPoint
    """Where the SAE reads (and writes)."""
    data: Corpus
    """The run's text: `data.held_out_contexts()` are the contexts its held-out metrics average over."""


def finished_run_summary(run_dir: str | Path) -> dict[str, Any]:
    """The summary.json of the finished run in `run_dir`, once its config, summary and saved SAE
    are all there (nothing loads: tools check their arguments against it first); an unfinished or
    failed run is refused with the missing path named."""
    run_dir = Path(run_dir)
    for required in (CONFIG_PATH, Path(SUMMARY_FILENAME), Path(SAE_DIRECTORY)):
        if not (run_dir / required).exists():
            raise FileNotFoundError(f"{run_dir / required} is missing: load_run needs a finished run directory")
    return json.loads((run_dir / SUMMARY_FILENAME).read_text())


def load_run(run_dir: str | Path) -> LoadedRun:
    """Rebuild the run in `run_dir`: its SAE, LM, hook point and data, as the run had them.
    The files are checked before the LM loads (`finished_run_summary`)."""
    run_dir = Path(run_dir)
    summary = finished_run_summary(run_dir)
    config = OmegaConf.load(run_dir / CONFIG_PATH)
    sae = load_sae(run_dir / SAE_DIRECTORY)
    model, hook = load_model(config)
    data = Corpus(config.data, model, None, config.model.get("hf_name"))
    return LoadedRun(run_dir, config, summary, sae.to(model.device), model, hook, data)
