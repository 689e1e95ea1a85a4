"""A tiny random Llama-style LM (2 blocks, d_model 16) for the e2e loss tests."""

import pytest
import torch

from sae_sweeps.models.loading import load_tiny_model

SMALL_LM = dict(n_layers=2, d_model=16, d_mlp=32, n_heads=2, vocab_size=512, n_ctx=64, seed=0)


@pytest.fixture(scope="session")
def small_lm(cache_dir):
    """float32, as runs use it."""
    return load_tiny_model("tiny", str(cache_dir / "models"), **SMALL_LM)


@pytest.fixture(scope="session")
def small_lm_f64(cache_dir):
    """A separate copy cast to float64 for gradient checks."""
    model = load_tiny_model("tiny", str(cache_dir / "models"), **SMALL_LM)
    model.bridge.double()
    return model


def _make_tokens(model, n_contexts: int = 2, length: int = 12, seed: int = 0) -> torch.Tensor:
    """Contexts that start with BOS and hold one EOS mid-way (special positions the loss skips)."""
    generator = torch.Generator().manual_seed(seed)
    special = torch.tensor(sorted(model.special_token_ids))
    tokens = torch.randint(0, model.vocab_size, (n_contexts, length), generator=generator)
    while bool(torch.isin(tokens, special).any()):  # keep the random part ordinary
        hit = torch.isin(tokens, special)
        tokens[hit] = torch.randint(0, model.vocab_size, (int(hit.sum()),), generator=generator)
    tokens[:, 0] = model.bos_token_id
    tokens[0, length // 2] = model.eos_token_id
    return tokens


@pytest.fixture(scope="session")
def make_tokens():
    return _make_tokens
