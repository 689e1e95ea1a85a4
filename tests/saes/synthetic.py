"""Synthetic activations from a known sparse dictionary, and the trainer's update loop in plain
PyTorch, shared by the architecture tests.

Ground truth: G unit feature directions in R^d (G > d: superposition); each sample activates
between 3 and 5 (by default) distinct features chosen uniformly, with magnitudes uniform in
[0.5, 1.5]; samples are scaled so that E||x||^2 = 1, as the trainer scales real activations.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from sae_sweeps.losses.local import LocalLoss
from sae_sweeps.saes.base import SparseAutoencoder
from sae_sweeps.training.schedules import Schedule


@dataclass
class SparseDictionaryData:
    features_GD: Tensor
    """The true feature directions, unit rows."""
    min_active: int
    max_active: int
    min_magnitude: float
    max_magnitude: float
    scale: float
    """Multiplies every sample so that E||x||^2 = 1."""

    @property
    def d(self) -> int:
        return self.features_GD.shape[1]

    @property
    def n_features(self) -> int:
        return self.features_GD.shape[0]

    def codes(self, n: int, generator: torch.Generator) -> Tensor:
        """The true sparse codes (already multiplied by `scale`), n x G: each row has between
        `min_active` and `max_active` (uniformly) distinct features, uniformly chosen, with
        magnitudes uniform in [min_magnitude, max_magnitude]."""
        features_NA = torch.rand(n, self.n_features, generator=generator).topk(self.max_active, dim=1).indices
        n_active_N1 = torch.randint(self.min_active, self.max_active + 1, (n, 1), generator=generator)
        on_NA = torch.arange(self.max_active) < n_active_N1
        magnitudes_NA = torch.empty(n, self.max_active).uniform_(self.min_magnitude, self.max_magnitude, generator=generator)
        codes_NG = torch.zeros(n, self.n_features)
        return codes_NG.scatter_(1, features_NA, on_NA * magnitudes_NA * self.scale)

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        return self.codes(n, generator) @ self.features_GD


def make_data(
    d: int = 32,
    n_features: int = 64,
    min_active: int = 3,
    max_active: int = 5,
    min_magnitude: float = 0.5,
    max_magnitude: float = 1.5,
    seed: int = 0,
) -> SparseDictionaryData:
    # Offset from the seeds the tests give torch.manual_seed: were they equal, the SAE's random
    # init (torch.randn(d_sae, d) under manual_seed(seed)) would draw the true features themselves.
    generator = torch.Generator().manual_seed(1_000_003 + seed)
    features_GD = torch.randn(n_features, d, generator=generator)
    features_GD /= features_GD.norm(dim=1, keepdim=True)
    data = SparseDictionaryData(features_GD, min_active, max_active, min_magnitude, max_magnitude, 1.0)
    probe = data.sample(32768, generator)
    data.scale = float(probe.pow(2).sum(dim=1).mean().rsqrt())
    return data


def train(
    sae: SparseAutoencoder,
    data: SparseDictionaryData,
    *,
    coefficient: float = 0.0,
    steps: int = 1500,
    batch_size: int = 256,
    lr: float = 3e-3,
    seed: int = 0,
    warmup_fraction: float = 0.05,
    dead_window_tokens: int = 25_000,
) -> list[float]:
    """Train `sae` the way SAETrainingModule does (LocalLoss, Adam with the architecture's betas,
    lr warm-up + cosine decay, sparsity warm-up, gradient clip 10, the decoder-norm maintenance
    calls, dead-latent bookkeeping); returns the training L0 of every step."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        sae.initialize_decoder_bias(data.sample(4096, generator))
    loss_fn = LocalLoss()
    schedule = Schedule(
        total_steps=steps,
        lr_warmup_steps=max(1, int(warmup_fraction * steps)),
        lr_final_fraction=0.1,
        sparsity_warmup_steps=int(warmup_fraction * steps),
    )
    optimizer = torch.optim.Adam(sae.parameters(), lr=lr, betas=sae.default_adam_betas)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule.lr_factor)
    tokens_since_fired_F = torch.zeros(sae.d_sae, dtype=torch.long)
    l0s = []
    sae.train()
    chunk = 64  # batches drawn at a time: sampling in bulk is much cheaper than batch by batch
    for step in range(steps):
        if step % chunk == 0:
            batches_CBD = data.sample(chunk * batch_size, generator).view(chunk, batch_size, data.d)
        x_BD = batches_CBD[step % chunk]
        dead_F = tokens_since_fired_F >= dead_window_tokens
        out = loss_fn(sae, x_BD, 1.0, coefficient * schedule.sparsity_factor(step), dead_F)
        optimizer.zero_grad(set_to_none=True)
        out.total.backward()
        sae.remove_gradient_parallel_to_decoder()
        torch.nn.utils.clip_grad_norm_(sae.parameters(), 10.0)
        optimizer.step()
        scheduler.step()
        sae.normalize_decoder()
        tokens_since_fired_F += batch_size
        tokens_since_fired_F[out.firing_counts_F > 0] = 0
        l0s.append(float(out.firing_counts_F.sum()) / out.n_tokens)
    return l0s


def feature_recovery(sae: SparseAutoencoder, data: SparseDictionaryData) -> float:
    """Mean over true features of the max cosine similarity with any learned decoder row."""
    W_dec_FD = sae.W_dec.detach()
    W_dec_FD = W_dec_FD / W_dec_FD.norm(dim=1, keepdim=True)
    return float((data.features_GD @ W_dec_FD.T).max(dim=1).values.mean())


@torch.no_grad()
def evaluate(sae: SparseAutoencoder, data: SparseDictionaryData, n: int = 8192, seed: int = 12345) -> dict[str, float]:
    """Held-out L0 and FVU (about the mean) in eval mode."""
    was_training = sae.training
    sae.eval()
    x_ND = data.sample(n, torch.Generator().manual_seed(seed))
    out = sae(x_ND)
    sae.train(was_training)
    fvu = (x_ND - out.reconstruction_BD).pow(2).sum() / (x_ND - x_ND.mean(dim=0)).pow(2).sum()
    return {"l0": float((out.latents_BF != 0).sum(dim=-1).float().mean()), "fvu": float(fvu)}
