"""A real launch.py sweep on the tiny model, analysed end to end by `python -m analysis`."""

import csv
import subprocess
import sys

import pytest

from launch_helpers import REPO

pytestmark = pytest.mark.slow


def test_a_tiny_sweep_leaves_frontier_figures_and_a_table_of_every_run(launch, tmp_path):
    launch(["-m", "model=tiny", "train.tokens=2048", "train.batch_size=512", "logger=none",
            "sae_arch=relu,topk", "sparsity.k=4,16", "sparsity.coefficient=0.5,2"])
    (sweep,) = tmp_path.glob("multirun/*/*")
    # the sweep analysed itself when it ended (the Hydra callback) ...
    assert list((sweep / "analysis").glob("*.png"))
    # ... and the CLI does the same on demand
    out = tmp_path / "report"
    proc = subprocess.run([sys.executable, "-m", "analysis", str(sweep), "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, check=True)
    assert str(out) in proc.stdout
    pngs = list(out.glob("*.png"))
    assert pngs and all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 1024 for p in pngs)
    assert list(out.glob("*.svg"))
    with open(out / "runs.csv") as f:
        runs = list(csv.DictReader(f))
    assert len(runs) == 8 and {r["status"] for r in runs} == {"completed"}
    assert {(r["sae_arch"], r["loss"]) for r in runs} == {("relu", "local"), ("topk", "local")}
