"""`python -m analysis.sparse_probing RUN_DIR`: k-sparse probing of a finished run's SAE on its data's labels,
as a table of k, the SAE-latent probe's accuracy, the raw-dimension probe's and the all-dimension probe's
(docs/sparse_probing.md). From Python: `probe_run(run_dir)`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from sae_sweeps.evaluation.sparse_probing import ProbingUnavailable, SparseProbingResult, sparse_prober
from sae_sweeps.loaded_run import load_run
from sae_sweeps.run_config import eval_cache_root

DEFAULT_DATA_CONFIG = Path(__file__).resolve().parents[1] / "conf" / "data" / "bbc_news.yaml"
"""Where the probe settings a run's config lacks (one from before sparse probing) come from."""


def probe_settings(config: DictConfig) -> DictConfig:
    """The run's data config, with today's defaults for the probe settings it predates."""
    return OmegaConf.merge(OmegaConf.load(DEFAULT_DATA_CONFIG), config.data)


def probe_run(run_dir: str | Path) -> SparseProbingResult:
    """Probe the SAE of the finished run in `run_dir` on the documents its own run would probe, reading the
    LM pass over them from the run's evaluation cache when it is there; ProbingUnavailable on data without
    labels. Probing runs whether or not the run's `data.sparse_probing` was on."""
    run = load_run(run_dir)
    data = probe_settings(run.config)
    prober = sparse_prober(
        run.data, run.hook, data.probe_train_documents, data.probe_held_out_documents, eval_cache_root(run.config),
        data.lm_batch_size,
    )
    return prober.score(run.sae)


def main(argv: Sequence[str] | None = None) -> int:
    """Print the table; 2 with a one-line error when the run cannot be probed."""
    parser = argparse.ArgumentParser(prog="python -m analysis.sparse_probing", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="a finished run directory (outputs/<date>/<time>, a sweep member)")
    args = parser.parse_args(argv)
    try:
        result = probe_run(args.run_dir)
    except (FileNotFoundError, ProbingUnavailable) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(
        f"k-sparse probing of {args.run_dir}: held-out balanced accuracy, mean over {len(result.tasks)} one-vs-rest "
        f"tasks ({', '.join(result.tasks)}); {result.train_documents} training, {result.held_out_documents} held-out documents"
    )
    print(result.table())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
