"""Held-out tokens per second of one evaluation, by the two routes the KL can take, on the same
reference passes (docs/method.md#kl).

    python benchmarks/eval_throughput.py                         # model=tiny, seconds
    python benchmarks/eval_throughput.py --model smollm2_135m    # the real offline model (~1 min on one thread)

- moments:      the KL from the clean distribution's mean unembedding row and offset, stored in the
                reference passes (every model without a logit soft cap; the default);
- clean logits: the clean unembedding input unembedded again and the KL over the vocabulary (the
                route a soft-capped model takes, and every model's before 2026-12-04).
Both routes run the spliced pass from the hook's layer only. Prints tokens/s of each (best of
--repeats), and the KL and CE with the SAE that each gives (they agree to ~1e-6 relative).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_utils import load_now, timeit  # noqa: E402
from e2e_step_cost import load, random_contexts  # noqa: E402

from sae_sweeps.evaluation.evaluator import Evaluator  # noqa: E402
from sae_sweeps.evaluation.reference_passes import ReferencePasses, compute_reference_passes  # noqa: E402
from sae_sweeps.models import HookPoint  # noqa: E402
from sae_sweeps.saes.relu import ReLUSAE  # noqa: E402


def without_moments(reference: ReferencePasses) -> ReferencePasses:
    """The same passes as a soft-capped model stores them: no moments, so the KL takes the clean logits."""
    n_contexts = len(reference.resid_NTD)
    return reference._replace(
        clean_mean_unembedding_NTD=reference.resid_NTD.new_zeros(n_contexts, 0, 0),
        clean_kl_offset_NT=reference.clean_kl_offset_NT.new_zeros(n_contexts, 0),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--contexts", type=int, default=8)
    parser.add_argument("--context-size", type=int, default=128)
    parser.add_argument("--batch-contexts", type=int, default=2, help="data.eval_batch_contexts")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, layer = load(args.model)
    hook = HookPoint.parse(f"blocks.{layer}.hook_resid_pre")
    contexts_NT = random_contexts(model, args.contexts, args.context_size)
    reference = compute_reference_passes(model, hook, contexts_NT, args.batch_contexts)
    torch.manual_seed(0)
    sae = ReLUSAE(d_in=model.d_model, d_sae=8 * model.d_model)
    tokens = contexts_NT.numel()
    print(f"{args.model} {hook.name}: {args.contexts} contexts of {args.context_size} tokens, {args.threads} thread(s); {load_now()}")
    for route, passes in (("moments", reference), ("clean logits", without_moments(reference))):
        evaluator = Evaluator(model, hook, contexts_NT, passes, args.batch_contexts)
        metrics = evaluator.evaluate(sae)
        seconds = timeit(lambda: evaluator.evaluate(sae), model.device, repeats=args.repeats, warmup=0)["best_s"]
        print(f"  {route:13s} {tokens / seconds:8.0f} tokens/s   KL {metrics.kl:.6f}   CE with the SAE {metrics.ce_loss_sae:.6f}")


if __name__ == "__main__":
    main()
