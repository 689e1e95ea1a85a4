"""One SAE training step (local loss) in plain PyTorch, timed, against the machine's dense matmul.

    python benchmarks/sae_step.py --arch topk --d-model 576 --d-sae 4608 --batch 4096 --k 32

The step is what the trainer does per batch: loss forward, backward, the decoder-gradient
projection, Adam, decoder renormalisation, firing statistics. Cost model (docs/method.md#cost-model):
10 * d_model * d_sae FLOPs per token; efficiency = that / the measured FLOP/s of a
[batch x d_model] @ [d_model x d_sae] matmul (same dtype, same timing basis). Architectures:

  topk            TopKSAE with dense decoding
  topk_sparse     TopK with sparse decoding (sae_sweeps/saes/sparse_decode.py, the CPU default)
  jumprelu, relu, batchtopk   the other architectures
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_utils import machine_info, peak_memory_gb, pick_device, reset_peak_memory, timeit  # noqa: E402

from sae_sweeps.losses.local import LocalLoss  # noqa: E402
from sae_sweeps.saes.base import SparseAutoencoder  # noqa: E402


def available_architectures() -> list[str]:
    return ["topk", "topk_sparse", "relu", "jumprelu", "batchtopk"]


def build(arch: str, d: int, n: int, k: int) -> tuple[SparseAutoencoder, float]:
    """The SAE and the sparsity coefficient its loss uses."""
    if arch in ("topk", "topk_sparse"):
        from sae_sweeps.saes.topk import TopKSAE

        if arch == "topk_sparse":
            sae = TopKSAE(d, n, k=k)
            sae.enable_fast_path(True, torch.device("cpu"))
            return sae, 0.0
        cls, coef, kwargs = TopKSAE, 0.0, {"k": k}
    elif arch == "jumprelu":
        from sae_sweeps.saes.jumprelu import JumpReLUSAE

        cls, coef, kwargs = JumpReLUSAE, 0.003, {}
    elif arch == "relu":
        from sae_sweeps.saes.relu import ReLUSAE

        cls, coef, kwargs = ReLUSAE, 0.05, {}
    elif arch == "batchtopk":
        from sae_sweeps.saes.batchtopk import BatchTopKSAE

        cls, coef, kwargs = BatchTopKSAE, 0.0, {"k": k}
    else:
        raise SystemExit(f"unknown --arch {arch}; one of {available_architectures()}")
    return cls(d, n, **kwargs), coef


def matmul_flops(batch: int, d: int, n: int, device: torch.device, dtype: torch.dtype, repeats: int) -> dict[str, float]:
    a = torch.randn(batch, d, device=device, dtype=dtype)
    b = torch.randn(d, n, device=device, dtype=dtype)
    t = timeit(lambda: a @ b, device, repeats=repeats, warmup=2)
    flops = 2 * batch * d * n
    return {"gflops_wall": flops / t["best_s"] / 1e9, "gflops_cpu": flops / t["best_cpu_s"] / 1e9, **t}


def bench(args: argparse.Namespace) -> dict:
    device = pick_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.keep_freed_memory and device.type == "cpu":
        from sae_sweeps.training.performance import keep_freed_memory

        keep_freed_memory()
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = args.tf32
        torch.backends.cudnn.allow_tf32 = args.tf32
    torch.manual_seed(0)
    d, n, B = args.d_model, args.d_sae, args.batch
    sae, coefficient = build(args.arch, d, n, args.k)
    sae = sae.to(device)
    if args.compile:
        sae.compile()
    loss_fn = LocalLoss()
    optimizer = torch.optim.Adam(sae.parameters(), lr=1e-4)
    x = torch.randn(B, d, device=device) / d**0.5
    dead = torch.zeros(n, dtype=torch.bool, device=device)
    dead[: int(args.dead_fraction * n)] = True
    tokens_since_fired = torch.zeros(n, dtype=torch.long, device=device)
    use_autocast = args.autocast and device.type == "cuda"

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_autocast):
            out = loss_fn(sae, x, 1.0, coefficient, dead)
        optimizer.zero_grad(set_to_none=True)
        out.total.backward()
        sae.remove_gradient_parallel_to_decoder()
        optimizer.step()
        sae.normalize_decoder()
        with torch.no_grad():  # what the module's firing statistics cost, without a host sync
            tokens_since_fired.add_(B).masked_fill_(out.firing_counts_F > 0, 0)

    reset_peak_memory(device)
    t = timeit(step, device, repeats=args.repeats, warmup=args.warmup)
    mm_dtype = torch.bfloat16 if use_autocast else torch.float32
    mm = matmul_flops(B, d, n, device, mm_dtype, args.repeats + 2)
    flops = 10 * d * n * B
    return {
        "arch": args.arch, "d_model": d, "d_sae": n, "batch": B, "k": args.k, "loss": "local",
        "dead_fraction": args.dead_fraction, "device": str(device), "threads": torch.get_num_threads(),
        "autocast_bf16": use_autocast, "keep_freed_memory": args.keep_freed_memory and device.type == "cpu", "tf32": bool(device.type == "cuda" and args.tf32), "compile": args.compile,
        "step_best_s": t["best_s"], "step_median_s": t["best_s"] and t["median_s"], "step_best_cpu_s": t["best_cpu_s"],
        "tokens_per_s": B / t["best_s"],
        "gflops_wall": flops / t["best_s"] / 1e9, "gflops_cpu": flops / t["best_cpu_s"] / 1e9,
        "matmul_gflops_wall": mm["gflops_wall"], "matmul_gflops_cpu": mm["gflops_cpu"],
        "efficiency_wall": flops / t["best_s"] / (mm["gflops_wall"] * 1e9),
        "efficiency_cpu": flops / t["best_cpu_s"] / (mm["gflops_cpu"] * 1e9),
        "peak_memory_gb": peak_memory_gb(device),
        "machine": machine_info(device),
    }


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", default="topk", help=f"one of {available_architectures()}")
    p.add_argument("--d-model", type=int, default=576)
    p.add_argument("--d-sae", type=int, default=4608)
    p.add_argument("--batch", type=int, default=4096)
    p.add_argument("--k", type=int, default=32)
    p.add_argument("--dead-fraction", type=float, default=0.0, help="latents marked dead (AuxK active when > 0)")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--autocast", action=argparse.BooleanOptionalAction, default=True, help="bf16 autocast (CUDA only)")
    p.add_argument("--tf32", action=argparse.BooleanOptionalAction, default=True, help="TF32 matmuls (CUDA only)")
    p.add_argument("--compile", action="store_true", help="torch.compile the SAE forward")
    p.add_argument("--keep-freed-memory", action=argparse.BooleanOptionalAction, default=True,
                   help="CPU: glibc keeps freed blocks (train.performance.cpu_keep_freed_memory, on by default)")
    p.add_argument("--json", action="store_true", help="print one JSON line instead of text")
    return p


def main() -> None:
    args = parser().parse_args()
    result = bench(args)
    if args.json:
        print(json.dumps(result))
        return
    r = result
    print(
        f"{r['arch']:14} d={r['d_model']} n={r['d_sae']} B={r['batch']} k={r['k']} {r['device']} threads={r['threads']}: "
        f"{r['step_best_s'] * 1e3:.1f} ms/step, {r['tokens_per_s']:.0f} tok/s, {r['gflops_wall']:.1f} GFLOP/s "
        f"= {r['efficiency_wall']:.0%} of matmul ({r['matmul_gflops_wall']:.1f}); CPU-time basis "
        f"{r['efficiency_cpu']:.0%}; peak {r['peak_memory_gb']:.2f} GB"
    )


if __name__ == "__main__":
    main()
