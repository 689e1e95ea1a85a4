"""The tiny model's data over the offline corpus, with small stream settings (cache_helpers.py)."""

from __future__ import annotations

import pytest
from cache_helpers import small_data_cfg

from sae_sweeps.data.corpus import Corpus


@pytest.fixture(scope="session")
def small_data(tiny_model) -> Corpus:
    return Corpus(small_data_cfg(), tiny_model)
