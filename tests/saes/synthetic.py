"""Synthetic activations from a known sparse dictionary, and the trainer's update loop in plain
PyTorch, shared by the architecture tests and benchmarks/synthetic_recovery.py.

Ground truth: G unit feature directions in R^d (G > d: superposition); samples are scaled so that
E||x||^2 = 1, as the trainer scales real activations. Two ways to draw the codes:
- `SparseDictionaryData` (the tests' easy case): each sample activates between 3 and 5 distinct
  features chosen uniformly, magnitudes uniform in [0.5, 1.5].
- `CorrelatedFeatureData` (the benchmark's hard case, docs/results.md#synthetic-recovery): each
  feature fires on its own with its own probability (log-uniform around 2%), some features follow a
  partner (correlated pairs), and each feature has its own typical magnitude.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from sae_sweeps.losses.base import input_and_target
from sae_sweeps.losses.local import LocalLoss
from sae_sweeps.saes.base import SparseAutoencoder
from sae_sweeps.training.schedules import Schedule


@dataclass
class SyntheticActivations:
    features_GD: Tensor
    """The true feature directions, unit rows."""
    scale: float
    """Multiplies every sample so that E||x||^2 = 1."""

    @property
    def d(self) -> int:
        return self.features_GD.shape[1]

    @property
    def n_features(self) -> int:
        return self.features_GD.shape[0]

    def codes(self, n: int, generator: torch.Generator) -> Tensor:
        """The true sparse codes (already multiplied by `scale`), n x G."""
        raise NotImplementedError

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        return self.codes(n, generator) @ self.features_GD

    def true_l0(self, n: int = 32768, seed: int = 4321) -> float:
        """Mean number of active true features per sample."""
        return float((self.codes(n, torch.Generator().manual_seed(seed)) != 0).sum(dim=1).float().mean())

    def normalise(self, generator: torch.Generator) -> None:
        """Set `scale` so that E||x||^2 = 1 (measured on a probe sample)."""
        self.scale = 1.0
        self.scale = float(self.sample(32768, generator).pow(2).sum(dim=1).mean().rsqrt())


def random_unit_directions(n: int, d: int, generator: torch.Generator) -> Tensor:
    directions_ND = torch.randn(n, d, generator=generator)
    return directions_ND / directions_ND.norm(dim=1, keepdim=True)


@dataclass
class SparseDictionaryData(SyntheticActivations):
    min_active: int
    max_active: int
    min_magnitude: float
    max_magnitude: float

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


@dataclass
class CorrelatedFeatureData(SyntheticActivations):
    firing_probability_G: Tensor
    """The chance that each feature fires on its own in a sample."""
    typical_magnitude_G: Tensor
    """Each feature's magnitude scale; a firing draws magnitude x uniform [0.5, 1.5]."""
    leaders_P: Tensor
    """Features whose firing pulls a partner in: follower `followers_P[i]` also fires with
    probability `follow_probability` whenever `leaders_P[i]` does."""
    followers_P: Tensor
    follow_probability: float

    def codes(self, n: int, generator: torch.Generator) -> Tensor:
        on_NG = torch.rand(n, self.n_features, generator=generator) < self.firing_probability_G
        pulled_NP = on_NG[:, self.leaders_P] & (torch.rand(n, len(self.leaders_P), generator=generator) < self.follow_probability)
        on_NG[:, self.followers_P] |= pulled_NP
        magnitudes_NG = self.typical_magnitude_G * torch.empty(n, self.n_features).uniform_(0.5, 1.5, generator=generator)
        return on_NG * magnitudes_NG * self.scale


def make_correlated_data(
    d: int = 64,
    features_per_dimension: int = 4,
    firing_probability_range: tuple[float, float] = (0.005, 0.05),
    magnitude_range: tuple[float, float] = (0.5, 2.0),
    correlated_pairs: int = 32,
    follow_probability: float = 0.7,
    seed: int = 0,
) -> CorrelatedFeatureData:
    """d x features_per_dimension features; firing probabilities and typical magnitudes log-uniform
    in their ranges (mean firing ~2% with the defaults); `correlated_pairs` disjoint
    (leader, follower) pairs."""
    generator = torch.Generator().manual_seed(2_000_003 + seed)
    n_features = d * features_per_dimension

    def log_uniform(low: float, high: float) -> Tensor:
        return torch.empty(n_features).uniform_(math.log(low), math.log(high), generator=generator).exp()

    features_GD = random_unit_directions(n_features, d, generator)
    firing_G, magnitude_G = log_uniform(*firing_probability_range), log_uniform(*magnitude_range)
    paired_2P = torch.randperm(n_features, generator=generator)[: 2 * correlated_pairs].view(2, correlated_pairs)
    data = CorrelatedFeatureData(features_GD, 1.0, firing_G, magnitude_G, paired_2P[0], paired_2P[1], follow_probability)
    data.normalise(generator)
    return data


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
    features_GD = random_unit_directions(n_features, d, generator)
    data = SparseDictionaryData(features_GD, 1.0, min_active, max_active, min_magnitude, max_magnitude)
    data.normalise(generator)
    return data


def train(
    sae: SparseAutoencoder,
    data: SyntheticActivations,
    *,
    coefficient: float | None = 0.0,
    steps: int = 1500,
    batch_size: int = 256,
    lr: float = 3e-3,
    seed: int = 0,
    warmup_fraction: float = 0.05,
    lr_decay_fraction: float = 0.2,
    dead_window_tokens: int = 25_000,
) -> list[float]:
    """Train `sae` the way SAETrainingModule does (LocalLoss, Adam with the architecture's betas,
    lr warm-up, constant, cosine decay over the final `lr_decay_fraction`, sparsity warm-up, gradient clip 10, the decoder-norm maintenance
    calls, dead-latent bookkeeping, the SAE's learning-rate multiples); returns the training L0 of every step. `coefficient=None`:
    the SAE's own `sae.sparsity` sets it (and sees every step's L0), as in a run."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        x_ND, target_ND = input_and_target(sae, data.sample(4096, generator))  # rows of pairs for a transcoder
        sae.initialize_decoder_bias(target_ND)
        sae.initialize_from_sample(x_ND)
    loss_fn = LocalLoss()
    schedule = Schedule(
        total_steps=steps,
        lr_warmup_steps=max(1, int(warmup_fraction * steps)),
        lr_final_fraction=0.1,
        sparsity_warmup_steps=int(warmup_fraction * steps),
        lr_decay_steps=round(lr_decay_fraction * steps),
    )
    # one Adam group per learning-rate multiple the SAE asks for, as SAETrainingModule.parameter_groups
    scales = sae.learning_rate_scales()
    groups: dict[float, list[torch.nn.Parameter]] = {}
    for name, parameter in sae.named_parameters():
        groups.setdefault(scales.get(name, 1.0), []).append(parameter)
    param_groups = [{"params": params, "lr": lr * scale} for scale, params in groups.items()]
    optimizer = torch.optim.Adam(param_groups, lr=lr, betas=sae.default_adam_betas)
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
        base_coefficient = sae.sparsity.coefficient() if coefficient is None else coefficient
        out = loss_fn(sae, x_BD, 1.0, base_coefficient * schedule.sparsity_factor(step), dead_F)
        optimizer.zero_grad(set_to_none=True)
        out.total.backward()
        sae.remove_gradient_parallel_to_decoder()
        torch.nn.utils.clip_grad_norm_(sae.parameters(), 10.0)
        optimizer.step()
        scheduler.step()
        sae.normalize_decoder()
        tokens_since_fired_F += batch_size
        tokens_since_fired_F[out.firing_counts_F > 0] = 0
        l0 = out.firing_counts_F.sum().float() / out.n_tokens
        sae.sparsity.observe(l0.detach(), step)
        l0s.append(float(l0))
    return l0s


def best_cosines(sae: SparseAutoencoder, data: SyntheticActivations) -> Tensor:
    """For each true feature, its largest cosine similarity with any learned decoder row."""
    W_dec_FD = sae.W_dec.detach()
    W_dec_FD = W_dec_FD / W_dec_FD.norm(dim=1, keepdim=True)
    return (data.features_GD @ W_dec_FD.T).max(dim=1).values


def feature_recovery(sae: SparseAutoencoder, data: SyntheticActivations) -> float:
    """Mean over true features of the max cosine similarity with any learned decoder row."""
    return float(best_cosines(sae, data).mean())


def recovered_fraction(sae: SparseAutoencoder, data: SyntheticActivations, cosine: float = 0.9) -> float:
    """The fraction of true features some decoder row matches at cosine > `cosine`."""
    return float((best_cosines(sae, data) > cosine).float().mean())


@torch.no_grad()
def evaluate(sae: SparseAutoencoder, data: SyntheticActivations, n: int = 8192, seed: int = 12345) -> dict[str, float]:
    """Held-out L0 and FVU (about the mean) in eval mode."""
    was_training = sae.training
    sae.eval()
    x_ND = data.sample(n, torch.Generator().manual_seed(seed))
    out = sae(x_ND)
    sae.train(was_training)
    fvu = (x_ND - out.reconstruction_BD).pow(2).sum() / (x_ND - x_ND.mean(dim=0)).pow(2).sum()
    return {"l0": float((out.latents_BF != 0).sum(dim=-1).float().mean()), "fvu": float(fvu)}
