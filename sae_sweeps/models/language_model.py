"""A frozen language model behind transformer_lens' TransformerBridge, with the three ways the
SAE code runs it: up to a hook point, from a layer onwards with hooks, and its token bookkeeping."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from sae_sweeps.models.hook_point import HookError, HookPoint

HookFn = Callable[[Tensor, object], Tensor | None]
UNEMBED_INPUT_HOOK = "unembed.hook_in"


class _StopForward(Exception):
    """Raised from a hook to end a forward pass once the activation we need exists."""


class LanguageModel:
    """A frozen causal LM: no parameter ever gets a gradient or an update."""

    def __init__(self, bridge, tokenizer, name: str) -> None:
        self.bridge = bridge.eval()
        self.bridge.requires_grad_(False)
        self.tokenizer = tokenizer
        self.name = name
        self.n_layers: int = bridge.cfg.n_layers
        self.d_model: int = bridge.cfg.d_model
        self.vocab_size: int = bridge.cfg.d_vocab
        bos = tokenizer.bos_token_id
        self.bos_token_id: int = bos if bos is not None else tokenizer.eos_token_id
        self.eos_token_id: int | None = tokenizer.eos_token_id
        # BOS/EOS/padding (and any other special token) are outliers: excluded from training
        # and from every metric.
        self.special_token_ids: frozenset[int] = frozenset(
            i for i in [*tokenizer.all_special_ids, bos, tokenizer.eos_token_id, tokenizer.pad_token_id]
            if i is not None
        )

    @property
    def device(self) -> torch.device:
        return next(self.bridge.parameters()).device

    def to(self, device: torch.device | str) -> LanguageModel:
        self.bridge.to(device, print_details=False)  # transformer_lens prints every move otherwise
        return self

    def check_hook(self, hook: HookPoint) -> None:
        hook.check_layer(self.n_layers)
        if hook.name not in self.bridge.hook_dict:
            raise HookError(f"hook.name={hook.name!r}: model {self.name} has no such hook")

    def special_token_mask(self, tokens_BT: Tensor) -> Tensor:
        """True where a position holds a special token."""
        special = torch.tensor(sorted(self.special_token_ids), device=tokens_BT.device)
        return torch.isin(tokens_BT, special)

    @torch.inference_mode()
    def activations_at(self, tokens_BT: Tensor, hook: HookPoint) -> Tensor:
        """The activation at `hook`, running only as much of the model as that needs."""
        if hook.is_resid_pre:
            return self.bridge(tokens_BT, stop_at_layer=hook.layer)
        captured: list[Tensor] = []

        def capture_and_stop(act: Tensor, hook: object) -> None:
            captured.append(act)
            raise _StopForward

        try:
            self.bridge.run_with_hooks(tokens_BT, fwd_hooks=[(hook.name, capture_and_stop)])
        except _StopForward:
            pass
        if not captured:
            raise HookError(f"hook.name={hook.name!r} never fired in a forward pass")
        return captured[0]

    @torch.no_grad()
    def residual_before(self, tokens_BT: Tensor, layer: int) -> Tensor:
        """resid_pre of `layer`: the shared prefix of the clean and spliced passes."""
        return self.bridge(tokens_BT, stop_at_layer=layer)

    def logits_from(
        self, resid_BTD: Tensor, layer: int, fwd_hooks: Sequence[tuple[str, HookFn]] = ()
    ) -> Tensor:
        """Run blocks `layer`.. and the unembedding on a resid_pre, with optional hooks."""
        if fwd_hooks:
            return self.bridge.run_with_hooks(resid_BTD, start_at_layer=layer, fwd_hooks=list(fwd_hooks))
        return self.bridge(resid_BTD, start_at_layer=layer)

    @torch.no_grad()
    def logits_and_unembed_input(self, resid_BTD: Tensor, layer: int) -> tuple[Tensor, Tensor]:
        """The clean logits from a resid_pre of `layer`, and the unembedding's input on the way."""
        captured: list[Tensor] = []
        logits = self.logits_from(resid_BTD, layer, [(UNEMBED_INPUT_HOOK, lambda act, hook: captured.append(act))])
        return logits, captured[0]

    @torch.no_grad()
    def unembed(self, unembed_input_BTD: Tensor) -> Tensor:
        """Logits from the unembedding's input (`logits_and_unembed_input`)."""
        return self.bridge.unembed(unembed_input_BTD)

    def activation_width(self, hook: HookPoint) -> int:
        """d_in of an SAE at `hook` (d_model for residual hooks, d_mlp inside the MLP)."""
        probe_BT = torch.full((1, 2), self.bos_token_id, device=self.device)
        return self.activations_at(probe_BT, hook).shape[-1]
