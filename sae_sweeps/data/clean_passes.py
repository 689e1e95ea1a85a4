"""The clean LM's passes over an end-to-end run's training contexts, computed once and shared on disk.

Every e2e step runs the LM prefix up to the hook and the clean model from the hook to the logits;
neither depends on the SAE. For each training context this stores the residual where the spliced
pass starts (resid_pre of the hook's layer) and the clean model's input to its unembedding, from
which the clean next-token distribution costs one matmul instead of the model's later blocks.
Both are stored in the LM's float32, as computed: the KL a step computes from them differs from a
live step's only by the rounding of one matmul, the unembedding, done separately from the rest of
the forward pass (tests/losses/test_clean_passes.py measures it).

The tensors live in `paths.clean_pass_cache`, keyed by the model, hook, data, the training contexts'
tokens themselves and the batch they were computed in, and checked the way the held-out set's
reference passes are (sae_sweeps/evaluation/shared_tensors.py): every e2e member of a sweep with
the same model, hook, data and budget reads what the first one computed. e2e_ds still runs its
clean pass (it compares every later block's residual), and reads only the prefix from here.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import IterableDataset

from sae_sweeps.data.streams import ContextSource, TokenStream
from sae_sweeps.evaluation.shared_tensors import cached_tensors, lm_pass_key
from sae_sweeps.models import HookPoint, LanguageModel

FORMAT_VERSION = 1
TENSORS = ("resid_NTD", "unembed_input_NTD")


@dataclass  # not frozen: Lightning moves a batch to the device by setting its fields
class ContextBatch:
    """Training contexts with the clean LM's passes over them (nothing an SAE changes)."""

    tokens_BT: Tensor
    """The token ids."""
    resid_BTD: Tensor
    """resid_pre of the hook's layer: where the spliced pass starts."""
    unembed_input_BTD: Tensor
    """The clean model's input to its unembedding: the clean logits are `model.unembed` of it."""

    def __len__(self) -> int:
        return len(self.tokens_BT)

    def chunk(self, n: int) -> list[ContextBatch]:
        """n slices of contexts, as Tensor.chunk (data-parallel ranks take one each)."""
        parts = (tensor.chunk(n) for tensor in (self.tokens_BT, self.resid_BTD, self.unembed_input_BTD))
        return [ContextBatch(*slices) for slices in zip(*parts)]

    def to(self, device: torch.device | str) -> ContextBatch:
        return ContextBatch(self.tokens_BT.to(device), self.resid_BTD.to(device), self.unembed_input_BTD.to(device))


@torch.no_grad()
def compute_clean_passes(model: LanguageModel, hook: HookPoint, contexts_NT: Tensor, batch_contexts: int) -> tuple[Tensor, Tensor]:
    """resid_pre of the hook's layer and the unembedding's input for every context, `batch_contexts` at a time
    (the training batch, so that each matmul sees the shapes a live step would)."""
    resid, unembed_input = [], []
    for tokens_BT in contexts_NT.split(batch_contexts):
        resid_BTD = model.residual_before(tokens_BT.to(model.device), hook.layer)
        _, unembed_input_BTD = model.logits_and_unembed_input(resid_BTD, hook.layer)
        resid.append(resid_BTD.cpu())
        unembed_input.append(unembed_input_BTD.cpu())
    return torch.cat(resid), torch.cat(unembed_input)


class CleanPassStream(IterableDataset):
    """`n_steps` batches of `contexts_per_batch` training contexts from context `first_context` on, each a
    `ContextBatch` read from the shared cache (computed there first if absent), from step `start_batch` on;
    bare token batches after `n_steps` (a loader that reads ahead)."""

    def __init__(
        self, model: LanguageModel, hook: HookPoint, contexts: ContextSource, contexts_per_batch: int, n_steps: int,
        root: Path, cache_fields: dict[str, Any], start_batch: int = 0, first_context: int = 0,
    ) -> None:
        self.model, self.hook = model, hook
        self.tokens = TokenStream(contexts, contexts_per_batch, 0, first_context)
        self.contexts_per_batch, self.n_steps, self.start_batch = contexts_per_batch, n_steps, int(start_batch)
        self.root, self.cache_fields = Path(root), cache_fields

    def __iter__(self) -> Iterator[ContextBatch | Tensor]:
        batches = iter(self.tokens)
        contexts_NT = torch.cat(list(islice(batches, self.n_steps)))
        key = lm_pass_key("training_clean_passes", FORMAT_VERSION, self.cache_fields, contexts_NT, self.contexts_per_batch)
        compute = lambda: compute_clean_passes(self.model, self.hook, contexts_NT, self.contexts_per_batch)  # noqa: E731
        resid_NTD, unembed_input_NTD = cached_tensors(
            self.root, key, TENSORS, compute, "the clean passes over the e2e training contexts", "clean-pass cache"
        )
        for step in range(self.start_batch, self.n_steps):
            rows = slice(step * self.contexts_per_batch, (step + 1) * self.contexts_per_batch)
            yield ContextBatch(contexts_NT[rows], resid_NTD[rows], unembed_input_NTD[rows])
        yield from islice(batches, max(0, self.start_batch - self.n_steps), None)
