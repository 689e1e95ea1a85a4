"""Every architecture on the same synthetic activations with known ground truth: held-out L0, FVU
and feature recovery, at the settings tests/saes/test_synthetic_training.py trains them with.

    python benchmarks/synthetic_recovery.py

Data (tests/saes/synthetic.py): 64 unit features in R^32 (superposition), 3 to 5 active per
sample, magnitudes uniform in [0.5, 1.5], E||x||^2 = 1; SAEs of 128 latents, 800 steps of 256.
A JumpReLU row with `target_l0` shows the target penalty landing on the true L0 (4).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "saes"))
from synthetic import evaluate, feature_recovery  # noqa: E402
from test_synthetic_training import ARCHITECTURES, data, trained  # noqa: E402


def main() -> None:
    rows = [(name, coefficient, None) for name, (_, coefficient) in ARCHITECTURES.items()]
    rows.append(("jumprelu", 0.03, 4.0))
    print("| architecture | setting | L0 | FVU | feature recovery (mean max cosine) |")
    print("|---|---|---|---|---|")
    for name, coefficient, target_l0 in rows:
        sae, _ = trained(name, coefficient, target_l0=target_l0)
        metrics = evaluate(sae, data())
        if target_l0 is not None:
            setting = f"target_l0 {target_l0:g} (coefficient {coefficient:g})"
        else:
            setting = f"k {sae.k}" if hasattr(sae, "k") else f"coefficient {coefficient:g}"
        print(
            f"| {name} | {setting} | {metrics['l0']:.2f} | {metrics['fvu']:.3f} | "
            f"{feature_recovery(sae, data()):.3f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
