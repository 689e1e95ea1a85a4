"""One sweep member, as a SLURM job would run it, with the time of each phase recorded.

    python benchmarks/member.py RUN_DIR [hydra overrides...]

Runs `sae_sweeps.run.train` on the composed config and writes RUN_DIR/phases.json:
model load, activation-cache open/build, LM activations (for training, inside fit), evaluation
(and its setup: the held-out set's reference passes, computed or read from the eval cache),
fit (the training loop), the whole member, peak RSS, and how many training tokens went through
the LM in this process. `++data.activation_cache=false` runs the live stream.
"""

from __future__ import annotations

import json
import sys
import time
from collections import defaultdict
from pathlib import Path

WALL0 = time.perf_counter()
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_utils import REPO, peak_rss_gb  # noqa: E402

import torch  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402

from sae_sweeps import run  # noqa: E402
from sae_sweeps.data import activation_cache  # noqa: E402
from sae_sweeps.evaluation import evaluator  # noqa: E402
from sae_sweeps.models import language_model, loading  # noqa: E402

seconds: dict[str, float] = defaultdict(float)
counts: dict[str, int] = defaultdict(int)
state = {"in_fit": False}


def timed(owner, name: str, label: str, count_tokens: bool = False) -> None:
    original = getattr(owner, name)

    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            elapsed = time.perf_counter() - start
            key = f"{label}_in_fit" if state["in_fit"] and label == "lm_activations" else label
            seconds[key] += elapsed
            if count_tokens and state["in_fit"]:
                tokens = args[1] if len(args) > 1 else kwargs.get("tokens_BT")
                counts["lm_training_tokens_in_fit"] += int(tokens.numel())

    setattr(owner, name, wrapper)


def main() -> None:
    run_dir = Path(sys.argv[1])
    overrides = sys.argv[2:]
    run_dir.mkdir(parents=True, exist_ok=True)
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["logger=none", "trainer.enable_progress_bar=false", *overrides])

    for loader_name in ("load_tiny_model", "load_gguf_from_package", "load_hub_model"):
        timed(loading, loader_name, "model_load")
    timed(language_model.LanguageModel, "activations_at", "lm_activations", count_tokens=True)
    timed(evaluator.Evaluator, "evaluate", "evaluation")
    timed(run, "build_evaluators", "evaluation_setup")  # the reference passes: computed, or read from the eval cache
    timed(activation_cache.ActivationCache, "open", "cache_open")
    timed(activation_cache.ActivationCache, "_build", "cache_build")
    timed(activation_cache.CacheReader, "read", "cache_read")

    import lightning as L

    fit = L.Trainer.fit

    def timed_fit(self, *args, **kwargs):
        state["in_fit"] = True
        start = time.perf_counter()
        try:
            return fit(self, *args, **kwargs)
        finally:
            seconds["fit"] += time.perf_counter() - start
            state["in_fit"] = False

    L.Trainer.fit = timed_fit
    start = time.perf_counter()
    summary = run.train(cfg, run_dir)
    seconds["train_call"] = time.perf_counter() - start
    seconds["process"] = time.perf_counter() - WALL0
    phases = {
        "seconds": {k: round(v, 3) for k, v in seconds.items()},
        "counts": dict(counts),
        "peak_rss_gb": round(peak_rss_gb(), 3),
        "threads": torch.get_num_threads(),
        "summary": {k: summary.get(k) for k in ("l0", "fvu", "ce_loss_increase", "tokens_trained", "train_seconds", "d_sae")},
        "overrides": overrides,
    }
    (run_dir / "phases.json").write_text(json.dumps(phases, indent=1))
    print(json.dumps(phases))


if __name__ == "__main__":
    main()
