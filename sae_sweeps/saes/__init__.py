"""SAE architectures, one small class each behind `SparseAutoencoder`."""

from sae_sweeps.saes.base import SAEOutput, SparseAutoencoder

__all__ = ["SAEOutput", "SparseAutoencoder"]
