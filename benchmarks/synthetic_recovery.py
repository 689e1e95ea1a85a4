"""Every architecture on synthetic activations with known ground truth: held-out L0, FVU and the
share of true features recovered.

    python benchmarks/synthetic_recovery.py            # the hard table, then the tests' easy one
    python benchmarks/synthetic_recovery.py --steps 1500 --only relu,topk
    python benchmarks/synthetic_recovery.py --skip-easy --only jumprelu sae_arch.module.target_weight=10   # a recipe change

Hard case (tests/saes/synthetic.py, `make_correlated_data`; docs/results.md#synthetic-recovery):
256 unit features in R^64 (4 per dimension), each firing on its own with a probability log-uniform
in [0.5%, 5%] (mean ~2%), 32 correlated pairs (the follower also fires on 70% of its leader's
firings), typical magnitudes log-uniform in [0.5, 2]. Every architecture is built from its yaml
under conf/ exactly as a run builds it, with `sparsity.target_l0` = the data's true L0 (rounded:
TopK-style k must be whole), 512 latents, Adam at lr 3e-3, batches of 256.

Easy case (the settings tests/saes/test_synthetic_training.py trains with): 64 features in R^32,
3 to 5 active per sample.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import hydra.utils
import torch
from hydra import compose, initialize_config_dir

ROOT = Path(__file__).resolve().parents[1]
# This checkout's package first: a worktree whose .venv is another checkout's would import that one's.
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "saes")]
from synthetic import evaluate, feature_recovery, make_correlated_data, recovered_fraction, train  # noqa: E402
from test_synthetic_training import ARCHITECTURES, data, trained  # noqa: E402

from sae_sweeps.saes.base import SparseAutoencoder, instantiate_sae  # noqa: E402

D_SAE = 512
BATCH, LR = 256, 3e-3
# Input-unit settings scale with a direction's share of x, ~1/sqrt(d): the recipe's 0.001 is for
# LM widths (d ~ 500-2000); at d = 64 the same relative bandwidth and threshold are ~3x larger.
OVERRIDES = {"jumprelu": ["sae_arch.module.bandwidth=0.003", "sae_arch.module.threshold_init=0.003"]}


def architecture_at_target(name: str, d_in: int, target_l0: int, steps: int, extra: list[str] = ()) -> SparseAutoencoder:
    """The SAE a run with `sae_arch=<name> sparsity.target_l0=<target_l0>` would train."""
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base=None):
        cfg = compose("config", overrides=[f"sae_arch={name}", f"sparsity.target_l0={target_l0}", *OVERRIDES.get(name, []), *extra])
    hydra.utils.get_class(cfg.sae_arch.module._target_).check_config(cfg, D_SAE)
    warmup_steps = int(cfg.sparsity.warmup_fraction * steps)
    torch.manual_seed(0)
    sae = instantiate_sae(cfg, d_in, D_SAE, steps, warmup_steps)
    sae.scale_encoder(cfg.sae_arch.encoder_init_scale)
    return sae


def hard_table(steps: int, only: list[str], extra: list[str] = ()) -> None:
    hard = make_correlated_data()
    true_l0 = hard.true_l0()
    target = round(true_l0)
    print(f"hard case: {hard.n_features} features in R^{hard.d}, true L0 {true_l0:.2f} (target_l0 {target}), {steps} steps of {BATCH}")
    print("| architecture | L0 | FVU | recovered (cos > 0.9) | mean max cosine | train s |")
    print("|---|---|---|---|---|---|")
    for name in only:
        sae = architecture_at_target(name, hard.d, target, steps, extra)
        start = time.perf_counter()
        train(sae, hard, coefficient=None, steps=steps, batch_size=BATCH, lr=LR)
        seconds = time.perf_counter() - start
        metrics = evaluate(sae.inference_form(), hard)
        print(
            f"| {name} | {metrics['l0']:.2f} | {metrics['fvu']:.3f} | {recovered_fraction(sae, hard):.1%} | "
            f"{feature_recovery(sae, hard):.3f} | {seconds:.0f} |",
            flush=True,
        )


def easy_table() -> None:
    rows = [(name, coefficient, None) for name, (_, coefficient) in ARCHITECTURES.items()]
    rows.append(("jumprelu", 0.03, 4.0))
    print("easy case (the tests' settings)")
    print("| architecture | setting | L0 | FVU | recovered (cos > 0.9) | mean max cosine |")
    print("|---|---|---|---|---|---|")
    for name, coefficient, target_l0 in rows:
        sae, _ = trained(name, coefficient, target_l0=target_l0)
        metrics = evaluate(sae, data())
        if target_l0 is not None:
            setting = f"target_l0 {target_l0:g} (coefficient {coefficient:g})"
        else:
            setting = f"k {sae.k}" if hasattr(sae, "k") else f"coefficient {coefficient:g}"
        print(
            f"| {name} | {setting} | {metrics['l0']:.2f} | {metrics['fvu']:.3f} | "
            f"{recovered_fraction(sae, data()):.1%} | {feature_recovery(sae, data()):.3f} |",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=4000, help="training steps on the hard case")
    parser.add_argument("--only", default="relu,gated,jumprelu,topk,batchtopk,matryoshka", help="architectures, comma-separated")
    parser.add_argument("--skip-easy", action="store_true", help="print only the hard table")
    parser.add_argument("overrides", nargs="*", help="config overrides for every architecture of the hard table, e.g. sae_arch.module.target_weight=10")
    args = parser.parse_args()
    torch.set_num_threads(1)  # small matrices: threads only add overhead
    hard_table(args.steps, args.only.split(","), args.overrides)
    if not args.skip_easy:
        easy_table()


if __name__ == "__main__":
    main()
