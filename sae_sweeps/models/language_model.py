"""A frozen language model behind transformer_lens' TransformerBridge, with the three ways the
SAE code runs it: up to a hook point, from a layer onwards with hooks, and its token bookkeeping."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor
from transformer_lens.utilities.activation_functions import softcap_enabled

from sae_sweeps.models.hook_point import HookError, HookPoint

HookFn = Callable[[Tensor, object], Tensor | None]
UNEMBED_INPUT_HOOK = "unembed.hook_in"


class _StopForward(Exception):
    """Raised from a hook to end a forward pass once the activation we need exists."""


def _pass_through(hidden_states: Tensor, *args: object, **kwargs: object) -> Tensor:
    """A transformer block's stand-in where its output is discarded: returns its input."""
    return hidden_states


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
        for key, name in (("hook.name", hook.name), ("hook.output", hook.output)):
            if name is not None and name not in self.bridge.hook_dict:
                raise HookError(f"{key}={name!r}: model {self.name} has no such hook")

    def special_token_mask(self, tokens_BT: Tensor) -> Tensor:
        """True where a position holds a special token."""
        special = torch.tensor(sorted(self.special_token_ids), device=tokens_BT.device)
        return torch.isin(tokens_BT, special)

    @torch.inference_mode()
    def activations_at(self, tokens_BT: Tensor, hook: HookPoint) -> Tensor:
        """The activation at `hook`, running only as much of the model as that needs; for a transcoder,
        its input and output activations side by side ([..., d_in + d_out]), so that one row per token
        holds a training pair wherever rows go (the shuffle buffer, the activation cache)."""
        if hook.is_resid_pre:
            return self.bridge(tokens_BT, stop_at_layer=hook.layer)
        captured: dict[str, Tensor] = {}
        last = hook.writes

        def capture(name: str) -> HookFn:
            def keep(act: Tensor, hook: object) -> None:  # transformer_lens passes `hook` by keyword
                captured[name] = act
                if last in captured:
                    raise _StopForward

            return keep

        names = [hook.name] if hook.output is None else [hook.name, hook.output]
        try:
            self.bridge.run_with_hooks(tokens_BT, fwd_hooks=[(name, capture(name)) for name in names])
        except _StopForward:
            pass
        missing = [name for name in names if name not in captured]
        if missing:
            raise HookError(f"hook {missing[0]!r} never fired in a forward pass before {hook.writes!r}")
        return torch.cat([captured[name] for name in names], dim=-1)

    @torch.no_grad()
    def residual_before(self, tokens_BT: Tensor, layer: int) -> Tensor:
        """resid_pre of `layer`: the shared prefix of the clean and spliced passes."""
        return self.bridge(tokens_BT, stop_at_layer=layer)

    def logits_from(
        self, resid_BTD: Tensor, layer: int, fwd_hooks: Sequence[tuple[str, HookFn]] = ()
    ) -> Tensor:
        """Run blocks `layer`.. and the unembedding on a resid_pre, with optional hooks."""
        with self._blocks_skipped_before(layer):
            if fwd_hooks:
                return self.bridge.run_with_hooks(resid_BTD, start_at_layer=layer, fwd_hooks=list(fwd_hooks))
            return self.bridge(resid_BTD, start_at_layer=layer)

    @contextmanager
    def _blocks_skipped_before(self, layer: int) -> Iterator[None]:
        """Blocks before `layer` pass their input through instead of computing.

        The bridge's `start_at_layer` feeds the residual through every earlier block as if it were
        the embedding and swaps it back in at `layer`, discarding their work: at layer 6 of 30 a
        fifth of every spliced pass (transformer_lens 4, `_setup_start_at_layer`). Whatever the
        skipped blocks return is discarded the same way.
        """
        skipped = [block.original_component for block in self.bridge.blocks[:layer]]
        for original in skipped:
            original.forward = _pass_through  # an instance attribute shadows the class's forward
        try:
            yield
        finally:
            for original in skipped:
                del original.forward

    @torch.no_grad()
    def logits_and_unembed_input(
        self, resid_BTD: Tensor, layer: int, fwd_hooks: Sequence[tuple[str, HookFn]] = ()
    ) -> tuple[Tensor, Tensor]:
        """The logits from a resid_pre of `layer` (with optional hooks), and the unembedding's input on the way."""
        captured: list[Tensor] = []
        logits = self.logits_from(resid_BTD, layer, [*fwd_hooks, (UNEMBED_INPUT_HOOK, lambda act, hook: captured.append(act))])
        return logits, captured[0]

    def unembed(self, unembed_input_BTD: Tensor) -> Tensor:
        """Logits from the unembedding's input (`logits_and_unembed_input`), with the model's own transform of
        them (Gemma 2's soft cap, Granite's scale) as its forward pass applies it."""
        return self.bridge.adapter.apply_output_logits_transform(self.bridge.unembed(unembed_input_BTD))

    @property
    def logits_affine_in_unembed_input(self) -> bool:
        """Whether the logits are A h + b of the unembedding's input h: no logit soft cap."""
        return not softcap_enabled(getattr(self.bridge.cfg, "output_logits_soft_cap", None))

    def io_widths(self, hook: HookPoint) -> tuple[int, int]:
        """(d_in, d_out) of an SAE or transcoder at `hook`: d_model for residual hooks, d_mlp inside the
        MLP; d_out = d_in for an SAE."""
        probe_BT = torch.full((1, 2), self.bos_token_id, device=self.device)
        width = self.activations_at(probe_BT, hook).shape[-1]
        if hook.output is None:
            return width, width
        d_in = self.activations_at(probe_BT, HookPoint.parse(hook.name)).shape[-1]
        return d_in, width - d_in
