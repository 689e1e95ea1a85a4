"""Saving and loading SAEs in SAELens' on-disk layout: `sae_weights.safetensors` + `cfg.json`.

The saved SAE takes raw activations (the training-time input scale is folded into its biases)
and is in its inference form (unit-norm decoder rows; BatchTopK exported as JumpReLU).

Transcoders are saved under the architecture names SAELens reads for them (`transcoder`,
`skip_transcoder`, `jumprelu_transcoder`, `jumprelu_skip_transcoder`, with `d_out`, the output hook
and `W_skip` of shape [d_out, d_in]). SAELens has no transcoder form of TopK or Gated: those are saved
in the same layout under our own name (`sae_sweeps.topk_transcoder`, ...), which only `load_sae` reads.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import hydra.utils
from safetensors.torch import load_file, save_file

from sae_sweeps.saes.base import SparseAutoencoder

WEIGHTS_FILENAME = "sae_weights.safetensors"
CFG_FILENAME = "cfg.json"
SAELENS_TRANSCODERS = {"standard": "transcoder", "jumprelu": "jumprelu_transcoder"}
"""SAELens' transcoder name for each SAE architecture it has one for (`skip_` goes before `transcoder`)."""


def saved_architecture(sae: SparseAutoencoder) -> str:
    """The cfg.json `architecture` of an SAE in its inference form."""
    if not sae.is_transcoder:
        return sae.saelens_architecture
    name = SAELENS_TRANSCODERS.get(sae.saelens_architecture, f"sae_sweeps.{sae.saelens_architecture}_transcoder")
    return name.replace("transcoder", "skip_transcoder") if sae.W_skip is not None else name


def save_sae(
    sae: SparseAutoencoder,
    directory: str | Path,
    input_scale: float = 1.0,
    metadata: dict[str, Any] | None = None,
    output_scale: float | None = None,
) -> Path:
    """Write the SAE's inference form to `directory`; returns the directory. A transcoder trained on
    `input_scale * x` to predict `output_scale * y` is saved taking raw x and predicting raw y."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    exported = sae.inference_form().cpu()
    exported.fold_input_scale(input_scale, output_scale)
    state = {k: v.detach().contiguous() for k, v in exported.state_dict().items()}
    save_file(state, str(directory / WEIGHTS_FILENAME))
    cls = type(exported)
    metadata = dict(metadata or {})
    transcoder_fields = {"d_out": exported.d_out} | {k: metadata[k] for k in ("hook_name_out", "hook_layer_out") if k in metadata}
    cfg = {
        "architecture": saved_architecture(exported),
        "d_in": exported.d_in,
        "d_sae": exported.d_sae,
        **(transcoder_fields if exported.is_transcoder else {}),
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": not exported.is_transcoder,
        "normalize_activations": "none",
        "reshape_activations": "none",
        **exported.saelens_cfg_extras(),
        "meta": metadata,
        "sae_sweeps": {
            "_target_": f"{cls.__module__}.{cls.__qualname__}",
            "init_kwargs": exported.init_kwargs(),
            "trained_as": sae.architecture,
        },
    }
    (directory / CFG_FILENAME).write_text(json.dumps(cfg, indent=2))
    return directory


def load_sae(directory: str | Path) -> SparseAutoencoder:
    """Rebuild a saved SAE from its directory, ready for inference on raw activations."""
    directory = Path(directory)
    cfg_path = directory / CFG_FILENAME
    if not cfg_path.is_file():
        raise FileNotFoundError(f"no SAE at {directory}: missing {CFG_FILENAME}")
    cfg = json.loads(cfg_path.read_text())
    ours = cfg.get("sae_sweeps")
    if ours is None:
        raise ValueError(f"{cfg_path} was not written by sae_sweeps (no 'sae_sweeps' entry)")
    cls = hydra.utils.get_class(ours["_target_"])
    sae = cls(**ours["init_kwargs"])
    sae.load_state_dict(load_file(str(directory / WEIGHTS_FILENAME)))
    return sae.eval()
