"""Hook points: where in the language model an SAE reads and writes.

An SAE reads and writes one activation. A transcoder (Dunefsky et al. 2024, arXiv 2406.11944) reads
one (the MLP's input, say) and writes another (the MLP's output): a hook point with an `output`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# transformer_lens hook names (the TransformerBridge keeps them) whose activation is one vector
# per token, which is what an SAE reconstructs. Checked against the loaded model as well.
PER_TOKEN_HOOKS = (
    "hook_resid_pre",
    "hook_resid_mid",
    "hook_resid_post",
    "hook_mlp_out",
    "hook_attn_out",
    "hook_mlp_in",
    "hook_attn_in",
    "mlp.hook_in",
    "mlp.hook_pre",
    "mlp.hook_post",
    "ln1.hook_normalized",
    "ln2.hook_normalized",
)
_BLOCK_HOOK = re.compile(r"^blocks\.(\d+)\.(.+)$")
PAIR_SEPARATOR = "->"


class HookError(ValueError):
    """A hook name that is malformed or that the model does not have."""


def _parse_block_hook(key: str, name: str) -> int:
    """The block of a per-token hook name; HookError naming `key` otherwise."""
    match = _BLOCK_HOOK.match(str(name))
    if match is None or match.group(2) not in PER_TOKEN_HOOKS:
        raise HookError(
            f"{key}={name!r} is not a per-token block hook; expected "
            f"blocks.<layer>.<one of {', '.join(PER_TOKEN_HOOKS)}>"
        )
    return int(match.group(1))


@dataclass(frozen=True)
class HookPoint:
    """Where an SAE reads (`name`, in block `layer`) and, for a transcoder, where it writes (`output`)."""

    name: str
    """Full transformer_lens name of the activation the SAE reads, e.g. `blocks.6.hook_resid_pre`."""
    layer: int
    """The block the read hook sits in: spliced passes start from this block's resid_pre."""
    output: str | None = None
    """A transcoder's output hook (e.g. `blocks.6.hook_mlp_out`), which it reconstructs and replaces; None for an SAE."""

    @classmethod
    def parse(cls, name: str, output: str | None = None) -> HookPoint:
        layer = _parse_block_hook("hook.name", name)
        if output is not None:
            if _parse_block_hook("hook.output", output) < layer:
                raise HookError(f"hook.output={output!r} comes before hook.name={name!r}: a transcoder writes downstream of what it reads")
            if output == name:
                raise HookError(f"hook.output={output!r} equals hook.name: that is an SAE (leave hook.output null)")
        return cls(name=name, layer=layer, output=output)

    @property
    def is_transcoder(self) -> bool:
        return self.output is not None

    @property
    def writes(self) -> str:
        """The activation the SAE's output replaces when it is spliced in (its own input for an SAE)."""
        return self.output or self.name

    @property
    def read_point(self) -> HookPoint:
        """The hook point of what is read alone (the transcoder's input; an SAE's is itself)."""
        return HookPoint(self.name, self.layer)

    @property
    def output_layer(self) -> int:
        return _parse_block_hook("hook.output", self.writes)

    @property
    def key(self) -> str:
        """One string naming what is read and written: the name of an SAE's hook, `input->output` for a transcoder."""
        return self.name if self.output is None else f"{self.name}{PAIR_SEPARATOR}{self.output}"

    @property
    def is_resid_pre(self) -> bool:
        return self.output is None and self.name.endswith(".hook_resid_pre")

    def check_layer(self, n_layers: int) -> None:
        for key, value, layer in (("hook.layer", self.layer, self.layer), ("hook.output", self.output, self.output_layer)):
            if not 0 <= layer < n_layers:
                raise HookError(f"{key}={value} is out of range: the model has layers 0..{n_layers - 1}")
