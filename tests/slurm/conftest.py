"""The `slurm_cluster` fixture: tests that need the real local SLURM cluster skip without it."""

import pytest

from slurm_cluster import SKIP_REASON, cluster_usable


@pytest.fixture(scope="module")
def slurm_cluster() -> None:
    if not cluster_usable():
        pytest.skip(SKIP_REASON)


