"""End-to-end losses (Braun et al. 2024): train the SAE through the frozen LM that reads its output.

- `E2ELoss` ("e2e"): splice the SAE's reconstruction into the LM at the hook point (ordinary tokens
  only; BOS/EOS/padding keep their activations) and minimise, per next-token position,

      KL(P_orig || P_sae) = sum_v P_orig(v) (log P_orig(v) - log P_sae(v))

  averaged over ordinary next-token positions, times `kl_coefficient`, plus the architecture's
  sparsity and auxiliary terms (and, for architectures that need it, such as BatchTopK's batch
  budget, the local reconstruction error: `SparseAutoencoder.local_reconstruction_weight`). This
  is the direction the paper's reference code computes
  (`F.kl_div(log_softmax(new), log_softmax(orig), log_target=True)` is KL(orig || new), although
  its docstring names the reverse) and the one `splicing.kl_divergence` reports.
- `E2EDownstreamLoss` ("e2e_ds"): e2e plus

      beta / (L - l) * sum_{k=l+1}^{L-1} mean_t || s * (resid_pre_k(SAE spliced) - resid_pre_k(clean)) ||^2

  where L is the number of blocks, l the hook's block, the mean runs over ordinary tokens and `s`
  is the run's input scale (the factor that makes E||s a_l||^2 = 1 at the hook). Measuring every
  downstream error in the hook's input-scaled units keeps `beta` free of the model's width and
  activation norm (so one value means the same on GPT-2 and SmolLM2) while keeping the paper's
  relative weighting of the later layers (whose residual norms grow). Conversion: the paper's
  per-element raw-unit MSE (F.mse_loss) with total coefficient beta_paper split over the n
  positions equals ours with beta = beta_paper * (L - l) * E||a_l||^2 / (n * d).

Work done once per batch (what the trainer calls a step):
1. the LM prefix up to the hook's block, `residual_before` (no_grad), shared by both passes;
2. the clean pass from that block on, under no_grad (no graph is kept);
3. the spliced pass from that block on, with the graph, so the backward pass runs through the
   later blocks into the SAE only: the LM's parameters have requires_grad False and stay so.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from omegaconf import DictConfig
from torch import Tensor
from torch.utils.data import IterableDataset

from sae_sweeps.data.clean_passes import ContextBatch
from sae_sweeps.losses.base import LossOutput, SAELoss, architecture_terms, combine, reconstruction_error
from sae_sweeps.models import HookPoint, LanguageModel
from sae_sweeps.saes import SparseAutoencoder
from sae_sweeps.splicing import Splice, SpliceHook, kl_divergence, next_token_log_probs, next_token_mask

if TYPE_CHECKING:
    from sae_sweeps.data.corpus import Corpus


class E2ELoss(SAELoss):
    """kl_coefficient * mean over ordinary next-token positions of KL(P_orig || P_sae), plus the
    architecture's sparsity and auxiliary terms (computed on the SAE's input at the hook)."""

    phase = "e2e"

    def steps_for_budget(self, data: Corpus, tokens: int, batch_tokens: int) -> int:
        return data.token_steps(tokens, batch_tokens)

    def training_stream(
        self, data: Corpus, hook: HookPoint, batch_tokens: int, seed: int, n_steps: int, start_batch: int = 0
    ) -> IterableDataset:
        """Whole training contexts (train.batch_size // data.context_size per step), which the loss runs through the
        LM, with the clean LM's passes over them where the corpus shares them (data/clean_passes.py)."""
        return data.context_stream(hook, batch_tokens, n_steps, start_batch)

    @classmethod
    def check_config(cls, cfg: DictConfig) -> None:
        for key in ("kl_coefficient", "beta"):
            value = cfg.loss.get(key, 0.0)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"loss.{key}={value} must be a number >= 0")

    def __init__(self, kl_coefficient: float = 1.0) -> None:
        self.kl_coefficient = float(kl_coefficient)
        self.model: LanguageModel | None = None
        self.hook: HookPoint | None = None

    def bind(self, model: LanguageModel, hook: HookPoint) -> None:
        self.model, self.hook = model, hook

    @torch.no_grad()
    def fidelity_scale(
        self, sae: SparseAutoencoder, data: Corpus, batch_tokens: int, input_scale: float, output_scale: float
    ) -> float:
        terms, splice = self.fidelity_terms(sae, next(iter(data.token_stream(batch_tokens))), input_scale, output_scale)
        return float(sum(terms.values()) / reconstruction_error(splice.target_ND, splice.output.reconstruction_BD))

    def downstream_hooks(self) -> list[str]:
        """Residual-stream hooks whose clean and spliced values the loss compares (none for e2e)."""
        return []

    def __call__(
        self,
        sae: SparseAutoencoder,
        batch: Tensor,
        input_scale: float,
        sparsity_coefficient: float,
        dead_latents_F: Tensor,
        output_scale: float | None = None,
    ) -> LossOutput:
        terms, splice = self.fidelity_terms(sae, batch, input_scale, output_scale)
        terms |= architecture_terms(
            sae, splice.target_ND, splice.output, sparsity_coefficient, dead_latents_F, self.auxiliary_weight, local_share=0.0
        )
        return combine(terms, splice.output)

    def fidelity_terms(
        self, sae: SparseAutoencoder, batch: Tensor, input_scale: float, output_scale: float | None = None
    ) -> tuple[dict[str, Tensor], Splice]:
        """The terms that measure what splicing the SAE in does to the LM (KL, and e2e_ds's downstream
        errors), and the splice itself (the SAE's input, output and target at the hook)."""
        if self.model is None or self.hook is None:
            raise RuntimeError(f"{type(self).__name__} needs bind(model, hook) before use")
        model, hook = self.model, self.hook
        batch = batch.to(model.device)
        clean_passes = batch if isinstance(batch, ContextBatch) else None
        tokens_BT = batch.tokens_BT if clean_passes is not None else batch
        ordinary_BT = ~model.special_token_mask(tokens_BT)
        predict_BT = next_token_mask(ordinary_BT)
        if not predict_BT.any():
            raise ValueError("the batch has no ordinary next-token positions to train on")
        downstream = self.downstream_hooks()

        # 1. The shared prefix: blocks 0..l-1, once, without a graph (or computed once for every run on these contexts).
        resid_BTD = clean_passes.resid_BTD if clean_passes is not None else model.residual_before(tokens_BT, hook.layer)

        # 2. The clean pass from block l, without a graph (from the shared passes: the unembedding alone).
        clean: dict[str, Tensor] = {}
        with torch.no_grad():
            if clean_passes is not None and not downstream:
                clean_logits = model.unembed(clean_passes.unembed_input_BTD)
            else:
                clean_logits = model.logits_from(resid_BTD, hook.layer, _capture_hooks(downstream, clean))
            clean_lp = next_token_log_probs(clean_logits)
            del clean_logits

        # 3. The spliced pass from block l, with a graph that reaches the SAE only.
        spliced: dict[str, Tensor] = {}
        splice_hook = SpliceHook(sae, hook, ordinary_BT, input_scale, output_scale)
        sae_logits = model.logits_from(resid_BTD, hook.layer, [*splice_hook.hooks(), *_capture_hooks(downstream, spliced)])
        sae_lp = next_token_log_probs(sae_logits)
        del sae_logits

        kl_BT = kl_divergence(clean_lp, sae_lp)
        terms = {"kl": self.kl_coefficient * kl_BT[predict_BT].mean()}
        terms |= self.extra_terms(clean, spliced, ordinary_BT, input_scale)
        return terms, splice_hook.splice

    def extra_terms(
        self, clean: dict[str, Tensor], spliced: dict[str, Tensor], ordinary_BT: Tensor, input_scale: float
    ) -> dict[str, Tensor]:
        return {}


class E2EDownstreamLoss(E2ELoss):
    """e2e+ds: the e2e loss (KL coefficient 0.5 in the paper) plus
    beta / (L - l) * sum_{k=l+1}^{L-1} (mean squared norm, over ordinary tokens, of the change the
    SAE causes in blocks.k.hook_resid_pre, in the hook's input-scaled units; see the module docstring)."""

    def __init__(self, kl_coefficient: float = 0.5, beta: float = 2.5) -> None:
        super().__init__(kl_coefficient)
        self.beta = float(beta)

    def downstream_hooks(self) -> list[str]:
        assert self.model is not None and self.hook is not None
        return [f"blocks.{k}.hook_resid_pre" for k in range(self.hook.output_layer + 1, self.model.n_layers)]

    def extra_terms(
        self, clean: dict[str, Tensor], spliced: dict[str, Tensor], ordinary_BT: Tensor, input_scale: float
    ) -> dict[str, Tensor]:
        assert self.model is not None and self.hook is not None
        names = self.downstream_hooks()
        missing = [n for n in names if n not in clean or n not in spliced]
        if missing:
            raise RuntimeError(f"downstream hooks did not fire: {missing}")
        total = None
        for name in names:
            error_ND = spliced[name][ordinary_BT] - clean[name][ordinary_BT]
            error_ND = error_ND.to(torch.promote_types(error_ND.dtype, torch.float32)) * input_scale
            term = error_ND.pow(2).sum(dim=-1).mean()
            total = term if total is None else total + term
        if total is None:  # the hook is in the last block: nothing downstream
            return {"downstream": torch.zeros((), device=ordinary_BT.device)}
        return {"downstream": self.beta / (self.model.n_layers - self.hook.output_layer) * total}


def _capture_hooks(names: list[str], store: dict[str, Tensor]) -> list[tuple[str, object]]:
    """Forward hooks that record the activation at each of `names` into `store` (unchanged)."""

    def make(name: str):
        def capture(acts_BTD: Tensor, hook: object) -> None:
            store[name] = acts_BTD.clone()  # a copy: later in-place edits of the stream cannot change it

        return capture

    return [(name, make(name)) for name in names]
