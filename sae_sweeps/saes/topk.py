"""TopK SAE (Gao et al. 2024) with the AuxK loss that revives dead latents."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor

from sae_sweeps.saes.base import SAEOutput, SettingError, SparseAutoencoder, check_target_l0
from sae_sweeps.saes.sparse_decode import sparse_decode_enabled, sparse_topk_forward
from sae_sweeps.saes.sparsity import HardBudget

if TYPE_CHECKING:
    from omegaconf import DictConfig


def keep_top_k(pre_acts_BF: Tensor, k: int) -> Tensor:
    """Zero all but the k largest entries of each row, then ReLU the survivors."""
    values_BK, indices_BK = pre_acts_BF.topk(k, dim=-1, sorted=False)
    return torch.zeros_like(pre_acts_BF).scatter_(-1, indices_BK, torch.relu(values_BK))


def auxk_loss(
    x_BD: Tensor,
    out: SAEOutput,
    W_dec_FD: Tensor,
    dead_latents_F: Tensor,
    aux_k: int,
) -> Tensor:
    """||e - e_hat||^2 / Var(x) where e = x - x_hat (detached) and e_hat is decoded from the
    top `aux_k` dead latents; scaled down by n_dead / aux_k when fewer latents than that are dead."""
    n_dead = int(dead_latents_F.sum())
    if n_dead == 0:
        return x_BD.new_zeros(())
    k = min(aux_k, n_dead)
    dead_pre_acts_BF = out.pre_acts_BF.masked_fill(~dead_latents_F, float("-inf"))
    aux_latents_BF = keep_top_k(dead_pre_acts_BF, k)
    residual_BD = (x_BD - out.reconstruction_BD).detach()
    residual_hat_BD = aux_latents_BF @ W_dec_FD
    total_variance = (x_BD - x_BD.mean(dim=0)).pow(2).sum(dim=-1).mean().clamp_min(1e-12)
    error = (residual_BD - residual_hat_BD).pow(2).sum(dim=-1).mean()
    return min(n_dead / aux_k, 1.0) * error / total_variance


def dead_latent_terms(
    sae: SparseAutoencoder, x_BD: Tensor, out: SAEOutput, dead_latents_F: Tensor, opening_F: Tensor,
    aux_coefficient: float, pull: float,
) -> Tensor:
    """aux_coefficient x AuxK on the dead latents (k_aux = d_in / 2) - pull x the sum of their
    `opening_F`, the parameter whose rise lets a latent fire (an encoder or gate bias; minus a
    JumpReLU threshold). A dead latent's pre-activations sit below where it fires, so no other term
    reaches that parameter, AuxK's ReLU'd code included: the pull moves it ~lr per Adam step (its
    weight hardly matters) until the latent fires again, and AuxK then trains it on the residual."""
    loss = x_BD.new_zeros(())
    if aux_coefficient:
        loss = loss + aux_coefficient * auxk_loss(x_BD, out, sae.W_dec, dead_latents_F, max(1, sae.d_in // 2))
    if pull:
        loss = loss - pull * (opening_F * dead_latents_F).sum()
    return loss


def target_k(target_l0: float) -> int:
    """The k of a per-token TopK term that aims at a target L0: its rounding, at least 1."""
    return max(1, round(target_l0))


def keep_top_k_by_direction(projections_BF: Tensor, W_enc_DF: Tensor, values_BF: Tensor, k: int) -> Tensor:
    """`values`, ReLU'd, at each token's k latents with the largest projection / ||W_enc[:, i]||
    (how well the encoder direction matches the token, whatever the column's length); zero elsewhere.
    Why: a penalty or a threshold shortens the encoder columns (and lowers the biases) of weak
    latents, so ranking by the pre-activations keeps passing them over (docs/results.md#synthetic-recovery)."""
    with torch.no_grad():
        chosen_BK = (projections_BF / W_enc_DF.norm(dim=0).clamp_min(1e-12)).topk(k, dim=-1, sorted=False).indices
    return torch.zeros_like(values_BF).scatter(-1, chosen_BK, torch.relu(values_BF.gather(-1, chosen_BK)))


def code_error(sae: SparseAutoencoder, x_BD: Tensor, out: SAEOutput, code_BF: Tensor) -> Tensor:
    """Per-token mean ||x - decode(code)||^2 (a skip transcoder's linear part included)."""
    reconstruction_BD = sae.decode(code_BF)
    if out.skip_BD is not None:
        reconstruction_BD = reconstruction_BD + out.skip_BD
    return (x_BD - reconstruction_BD).pow(2).sum(dim=-1).mean()


def per_token_topk_error(sae: SparseAutoencoder, x_BD: Tensor, out: SAEOutput, k: int) -> Tensor:
    """Per-token mean ||x - decode(TopK_k(z))||^2: the error of `sae`'s dictionary used as a TopK SAE
    (Gao et al. 2024's loss; a skip transcoder's linear part included). An auxiliary term for
    thresholded architectures, whose latents learn only from activations above their threshold:
    it trains each token's k largest pre-activations, weak latents on quiet tokens included."""
    return code_error(sae, x_BD, out, keep_top_k(out.pre_acts_BF, k))


class TopKSAE(SparseAutoencoder):
    """Keeps the k largest pre-activations per token: no penalty, k sets L0 directly."""

    architecture: ClassVar[str] = "topk"
    saelens_architecture: ClassVar[str] = "topk"

    def __init__(
        self,
        d_in: int,
        d_sae: int,
        k: int,
        aux_k: int | None = None,
        aux_coefficient: float = 1 / 32,
        d_out: int | None = None,
        skip: bool = False,
    ) -> None:
        super().__init__(d_in, d_sae, d_out, skip)
        self.k = int(k)
        self.aux_k = int(aux_k) if aux_k is not None else max(1, d_in // 2)
        self.aux_coefficient = aux_coefficient
        self.sparse_decode = False
        """Decode from the k (value, index) pairs per token (saes/sparse_decode.py); see enable_fast_path."""
        self.sparsity = HardBudget(self.k)

    @classmethod
    def sparsity_for(cls, sparsity_cfg: DictConfig, total_steps: int, warmup_steps: int) -> HardBudget:
        """k = `sparsity.target_l0` when given (a matched-L0 sweep), else `sparsity.k`."""
        target = sparsity_cfg.target_l0
        return HardBudget(sparsity_cfg.k if target is None else int(target), target_l0=target)

    @classmethod
    def check_config(cls, cfg: DictConfig, d_sae: int) -> None:
        target = check_target_l0(cfg, d_sae)
        if target is not None:
            if target != int(target):
                raise SettingError(f"sparsity.target_l0={target} must be a whole number for {cls.architecture} (it sets k)")
            return
        k = cfg.sparsity.k
        if not isinstance(k, int) or isinstance(k, bool):
            raise SettingError(f"sparsity.k={k} must be a whole number")
        if k < 1:
            raise SettingError(f"sparsity.k={k} must be at least 1")
        if k > d_sae:
            raise SettingError(f"sparsity.k={k} is larger than the dictionary (d_sae={d_sae})")

    def enable_fast_path(self, setting: bool | str, device: torch.device) -> bool:
        # The fused kernel centres the input by b_dec, which a transcoder does not.
        self.sparse_decode = not self.is_transcoder and sparse_decode_enabled(setting, device, self.k, self.d_sae)
        return self.sparse_decode

    def code_and_reconstruct(self, x_BD: Tensor) -> SAEOutput:
        if self.sparse_decode:
            return sparse_topk_forward(self, x_BD)
        return super().code_and_reconstruct(x_BD)

    def activation(self, pre_acts_BF: Tensor) -> Tensor:
        return keep_top_k(pre_acts_BF, self.k)

    def auxiliary_loss(self, x_BD: Tensor, out: SAEOutput, dead_latents_F: Tensor) -> Tensor:
        return self.aux_coefficient * auxk_loss(x_BD, out, self.W_dec, dead_latents_F, self.aux_k)

    def init_kwargs(self) -> dict[str, Any]:
        return super().init_kwargs() | {
            "k": self.k,
            "aux_k": self.aux_k,
            "aux_coefficient": self.aux_coefficient,
        }

    def saelens_cfg_extras(self) -> dict[str, Any]:
        return {"k": self.k}

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, k={self.k}"
