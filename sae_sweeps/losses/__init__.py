"""Training objectives for SAEs (the `loss` config group)."""

from sae_sweeps.losses.base import LossOutput, SAELoss

__all__ = ["LossOutput", "SAELoss"]
