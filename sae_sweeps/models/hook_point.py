"""Hook points: where in the language model an SAE reads (and, for e2e losses, writes)."""

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
    "mlp.hook_pre",
    "mlp.hook_post",
    "ln1.hook_normalized",
    "ln2.hook_normalized",
)
_BLOCK_HOOK = re.compile(r"^blocks\.(\d+)\.(.+)$")


class HookError(ValueError):
    """A hook name that is malformed or that the model does not have."""


@dataclass(frozen=True)
class HookPoint:
    """A per-token activation inside transformer block `layer`."""

    name: str
    """Full transformer_lens name, e.g. `blocks.6.hook_resid_pre`."""
    layer: int
    """The block the hook sits in; everything after it is 'downstream'."""

    @classmethod
    def parse(cls, name: str) -> HookPoint:
        match = _BLOCK_HOOK.match(name)
        if match is None or match.group(2) not in PER_TOKEN_HOOKS:
            raise HookError(
                f"hook.name={name!r} is not a per-token block hook; expected "
                f"blocks.<layer>.<one of {', '.join(PER_TOKEN_HOOKS)}>"
            )
        return cls(name=name, layer=int(match.group(1)))

    @property
    def is_resid_pre(self) -> bool:
        return self.name.endswith(".hook_resid_pre")

    def check_layer(self, n_layers: int) -> None:
        if not 0 <= self.layer < n_layers:
            raise HookError(
                f"hook.layer={self.layer} is out of range: the model has layers 0..{n_layers - 1}"
            )
