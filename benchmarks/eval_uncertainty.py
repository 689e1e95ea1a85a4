"""How certain one member's held-out numbers are, and what the evaluation costs it.

    python benchmarks/eval_uncertainty.py model=tiny              # seconds
    python benchmarks/eval_uncertainty.py                         # the default run (SmolLM2), a few minutes
    python benchmarks/eval_uncertainty.py data.eval_contexts=128  # any other overrides

Runs one member through benchmarks/member.py (its own process, phases timed) in a scratch directory and
prints, at that run's eval size (`data.eval_contexts`): CE loss increase ± its standard error over
contexts, the unpaired SE of CE with the SAE for comparison, the evaluation's share of the member's
wall time (a member that builds the shared activation cache, or the held-out set's reference passes
in the eval cache, pays for them once: run twice to see a cached member), and the eval contexts that would bring SE(CE increase) to --target, extrapolated as
SE ~ 1/sqrt(contexts) from the measured SE (not measured). The last stdout line is the result as JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_utils import load_now  # noqa: E402
from run_benchmarks import member  # noqa: E402


def uncertainty_report(phases: dict, summary: dict, target_se: float) -> dict:
    """The measured SEs and the evaluation's share, and the extrapolated eval size for `target_se`."""
    contexts = int(summary["config"]["data"]["eval_contexts"])
    se = summary["ce_loss_increase_se"]
    needed = max(2, math.ceil(contexts * (se / target_se) ** 2)) if math.isfinite(se) else None
    seconds = phases["seconds"]
    evaluation_s = seconds.get("evaluation", 0.0) + seconds.get("evaluation_setup", 0.0)
    return {
        "model": summary["model"], "hook": summary["hook"], "sae_arch": summary["sae_arch"],
        "eval_contexts": contexts, "eval_tokens": summary["eval_tokens"],
        "ce_loss_increase": summary["ce_loss_increase"], "ce_loss_increase_se": se,
        "ce_loss_sae_se": summary["ce_loss_sae_se"], "ce_loss_recovered_se": summary["ce_loss_recovered_se"],
        "kl_se": summary["kl_se"], "evaluation_s": evaluation_s, "member_process_s": seconds["process"],
        "evaluation_setup_s": seconds.get("evaluation_setup", 0.0),
        "activation_cache_build_s": seconds.get("cache_build", 0.0),
        "evaluation_share": evaluation_s / seconds["process"],
        "target_se": target_se, "contexts_for_target_extrapolated": needed,
        "tokens_for_target_extrapolated": None if needed is None else round(needed * summary["eval_tokens"] / contexts),
        "load": phases["load"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", type=float, default=0.01, help="SE(CE loss increase) to size the eval set for")
    parser.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS of the member")
    parser.add_argument("overrides", nargs="*", help="hydra overrides of the member, e.g. model=tiny")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="eval_uncertainty_") as scratch:
        run_dir = Path(scratch) / "member"
        phases = member(run_dir, args.overrides, args.threads)
        summary = json.loads((run_dir / "summary.json").read_text())
    result = uncertainty_report(phases, summary, args.target)
    print(
        f"{result['model']} {result['hook']} {result['sae_arch']}: {result['eval_contexts']} eval contexts "
        f"({result['eval_tokens']} tokens); CE loss increase {result['ce_loss_increase']:.4f} "
        f"± {result['ce_loss_increase_se']:.4f} (paired SE; the unpaired SE of CE with the SAE is "
        f"{result['ce_loss_sae_se']:.4f})"
    )
    print(
        f"evaluation {result['evaluation_s']:.1f} s of the member's {result['member_process_s']:.1f} s "
        f"({100 * result['evaluation_share']:.0f}%, of which {result['evaluation_setup_s']:.1f} s the reference "
        f"passes; building the activation cache took {result['activation_cache_build_s']:.1f} s of the member); "
        f"{result['load']}, now {load_now()}"
    )
    if result["contexts_for_target_extrapolated"] is not None:
        print(
            f"SE(CE increase) <= {args.target:g} takes about {result['contexts_for_target_extrapolated']} eval contexts "
            f"(~{result['tokens_for_target_extrapolated']} tokens): extrapolated as 1/sqrt(contexts), not measured"
        )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
