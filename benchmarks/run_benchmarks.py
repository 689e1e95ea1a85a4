"""The project's performance benchmarks, on CPU or GPU unchanged.

    python benchmarks/run_benchmarks.py --quick                 # a few minutes on 2 CPU cores
    python benchmarks/run_benchmarks.py                         # all architectures, 6-member sweep (tiny)
    python benchmarks/run_benchmarks.py --model smollm2_135m    # the sweep on the real default model

Prints (and writes to --out as JSON, plus a markdown table):
1. SAE step (local loss) per architecture at (d_model, d_sae, batch): tokens/s, achieved FLOP/s by
   the cost model 10 * d_model * d_sae per token, its ratio to a dense [batch x d_model] @
   [d_model x d_sae] matmul measured in the same process, peak memory (RSS on CPU,
   max_memory_allocated on GPU). Each configuration runs in its own process.
2. Lightning's per-step overhead: SAETrainingModule under Trainer.fit vs a plain loop.
3. e2e/local step-cost ratio (benchmarks/e2e_step_cost.py).
4. Sweep: N members at one hook point reading one activation cache (the first builds it: one LM
   pass), against N times one live run; each member a separate process, as SLURM jobs would be.
On a shared CPU, wall times are inflated by other processes: the tables also give CPU-time
numbers (best of N), and the load average is recorded with every section.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_utils import REPO, load_now, machine_info, pick_device  # noqa: E402

HERE = Path(__file__).resolve().parent
PY = sys.executable


def run_json(cmd: list[str], env: dict | None = None, timeout: int = 3600) -> dict:
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, cwd=REPO)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def child_env(threads: int | None) -> dict:
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("WANDB_MODE", "offline")
    return env


def run_benchmark_process(cmd: list[str], threads: int | None) -> dict:
    """One measurement in its own process, stamped with the load average it ran under."""
    result = run_json(cmd, child_env(threads))
    result["load"] = load_now()
    return result


# -- 1. SAE step ------------------------------------------------------------------------------------------
def sae_steps(args: argparse.Namespace) -> list[dict]:
    from sae_step import available_architectures

    archs = available_architectures()
    if args.quick:
        archs = [a for a in archs if a in ("topk", "topk_sparse", "jumprelu")]
    configs = [(a, 0.0) for a in archs] + ([] if args.quick else [("topk", 0.1), ("topk_sparse", 0.1)])
    results = []
    for arch, dead in configs:
        cmd = [PY, str(HERE / "sae_step.py"), "--json", "--arch", arch, "--d-model", str(args.d_model),
               "--d-sae", str(args.d_sae), "--batch", str(args.batch), "--k", str(args.k),
               "--dead-fraction", str(dead), "--device", args.device, "--repeats", str(args.repeats)]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        if args.compile:
            cmd += ["--compile"]
        r = run_benchmark_process(cmd, args.threads)
        results.append(r)
        print(
            f"  {arch:14} dead={dead:.0%}: {r['tokens_per_s']:8.0f} tok/s  {r['gflops_wall']:7.1f} GFLOP/s "
            f"{r['efficiency_wall']:5.0%} of matmul ({r['matmul_gflops_wall']:.1f})  CPU-time basis "
            f"{r['efficiency_cpu']:5.0%} ({r['gflops_cpu']:.1f} of {r['matmul_gflops_cpu']:.1f})  "
            f"peak {r['peak_memory_gb']:.2f} GB  [{r['load']}]",
            flush=True,
        )
    return results


# -- 2. Lightning overhead -----------------------------------------------------------------------------------
def lightning(args: argparse.Namespace) -> list[dict]:
    sizes = [(64, 512, 512, 200 if not args.quick else 100)]
    if not args.quick:
        sizes.append((args.d_model, args.d_sae, args.batch, 12))
    out = []
    for d, n, b, steps in sizes:
        cmd = [PY, str(HERE / "lightning_overhead.py"), "--d-model", str(d), "--d-sae", str(n), "--batch", str(b),
               "--steps", str(steps), "--device", args.device, "--k", str(min(args.k, n))]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        r = run_benchmark_process(cmd, args.threads)
        out.append(r)
        print(
            f"  d={d} n={n} B={b}: plain {r['plain_ms_cpu']:.1f} ms, Lightning {r['lightning_ms_cpu']:.1f} ms "
            f"(+{r['overhead_ms_cpu']:.1f} ms, {r['overhead_fraction_cpu']:.0%}), progress bar on "
            f"{r['lightning_progress_bar_ms_cpu']:.1f} ms (CPU time/step; wall {r['plain_ms_wall']:.1f} vs "
            f"{r['lightning_ms_wall']:.1f}) [{r['load']}]",
            flush=True,
        )
    return out


# -- 3. e2e / local -------------------------------------------------------------------------------------------
def e2e_ratio(args: argparse.Namespace) -> dict | None:
    script = HERE / "e2e_step_cost.py"
    if not script.exists():
        print("  benchmarks/e2e_step_cost.py not present: skipped")
        return None
    cmd = [PY, str(script), "--model", args.model, "--repeats", "2" if args.quick else "3"]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=child_env(args.threads), cwd=REPO, timeout=3600)
    if proc.returncode != 0:
        print(f"  e2e_step_cost.py failed: {proc.stderr.strip().splitlines()[-1:]}")
        return {"error": proc.stderr[-2000:]}
    rows = {}
    for line in proc.stdout.splitlines():
        parts = line.split()
        if parts and parts[0] in ("local", "e2e", "e2e_ds") and len(parts) >= 7:
            rows[parts[0]] = {"s_per_step": float(parts[1]), "measured_over_local": float(parts[5]),
                              "predicted_over_local": float(parts[6])}
    for name, r in rows.items():
        print(f"  {name:7} measured/local {r['measured_over_local']:.2f}  predicted {r['predicted_over_local']:.2f}")
    return {"rows": rows, "output": proc.stdout, "load": load_now()}


# -- 4. sweep -------------------------------------------------------------------------------------------------
def member(run_dir: Path, overrides: list[str], threads: int | None) -> dict:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    phases = run_json([PY, str(HERE / "member.py"), str(run_dir), *overrides], child_env(threads), timeout=7200)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    phases["wall_s"] = time.perf_counter() - start
    phases["cpu_s"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    phases["load"] = load_now()
    return phases


def sweep(args: argparse.Namespace) -> dict:
    ks = [16, 24, 32, 48, 64, 96, 128, 192][: args.members]
    work = Path(tempfile.mkdtemp(prefix="sae_sweep_bench_"))
    cache_root = work / "activations"
    common = [f"model={args.model}", f"++paths.activation_cache={cache_root}"]
    if args.tokens:
        common.append(f"train.tokens={args.tokens}")
    if args.sweep_batch:
        common.append(f"train.batch_size={args.sweep_batch}")
    if args.device == "cpu":
        common.append("trainer=cpu")
    print(f"  work dir {work}; members k={ks}", flush=True)
    live = member(work / "live", [*common, f"sparsity.k={ks[0]}", "++data.activation_cache=false"], args.threads)
    print(f"  live run (k={ks[0]}): {live['wall_s']:.0f} s wall, {live['cpu_s']:.0f} s CPU, "
          f"peak RSS {live['peak_rss_gb']:.2f} GB [{live['load']}]", flush=True)
    members = []
    for k in ks:
        m = member(work / f"k{k}", [*common, f"sparsity.k={k}"], args.threads)
        members.append(m)
        s = m["seconds"]
        print(f"  cached member k={k}: {m['wall_s']:.0f} s wall, {m['cpu_s']:.0f} s CPU; cache build "
              f"{s.get('cache_build', 0):.0f} s, fit {s.get('fit', 0):.0f} s, eval {s.get('evaluation', 0):.0f} s, "
              f"model load {s.get('model_load', 0):.0f} s; LM training tokens in fit "
              f"{m['counts'].get('lm_training_tokens_in_fit', 0)} [{m['load']}]", flush=True)
    builds_log = [json.loads(line) for p in cache_root.glob("*/builds.log") for line in p.read_text().splitlines()]
    lm_pass = sum(b["seconds"] for b in builds_log)
    fits = sum(m["seconds"].get("fit", 0.0) for m in members)
    total = sum(m["wall_s"] for m in members)
    total_cpu = sum(m["cpu_s"] for m in members)
    lm_live = live["seconds"].get("lm_activations_in_fit", 0.0)
    training_live = live["wall_s"] - lm_live  # one run's cost without its LM pass over the training tokens
    ideal = lm_pass + len(ks) * training_live
    same_as_live = all(
        members[0]["summary"][key] == live["summary"][key] for key in ("l0", "fvu", "ce_loss_increase", "tokens_trained")
    )
    result = {
        "model": args.model, "members": len(ks), "ks": ks, "work_dir": str(work),
        "cache_builds": builds_log, "lm_passes_over_training_tokens": len(builds_log),
        "lm_pass_s": lm_pass, "sum_fit_s": fits, "sweep_wall_s": total, "sweep_cpu_s": total_cpu,
        "ratio_to_lm_pass_plus_fits": total / (lm_pass + fits),
        "live_lm_s": lm_live, "live_training_s": training_live,
        "ratio_to_lm_pass_plus_n_trainings": total / ideal,
        "live_single_wall_s": live["wall_s"], "live_single_cpu_s": live["cpu_s"],
        "n_times_live_wall_s": len(ks) * live["wall_s"], "n_times_live_cpu_s": len(ks) * live["cpu_s"],
        "speedup_vs_n_live_wall": len(ks) * live["wall_s"] / total,
        "speedup_vs_n_live_cpu": len(ks) * live["cpu_s"] / total_cpu,
        "cached_member_equals_live_run": same_as_live,
        "peak_rss_gb_live": live["peak_rss_gb"], "peak_rss_gb_cached_max": max(m["peak_rss_gb"] for m in members),
        "live": live, "member_phases": members,
    }
    print(
        f"  sweep of {len(ks)}: {total:.0f} s wall ({total_cpu:.0f} s CPU) vs {len(ks)} x live = "
        f"{len(ks) * live['wall_s']:.0f} s wall ({len(ks) * live['cpu_s']:.0f} s CPU); LM passes over training "
        f"tokens: {len(builds_log)}; sweep / (LM pass {lm_pass:.0f} s + {len(ks)} x a live run without its LM "
        f"pass {training_live:.0f} s) = {result['ratio_to_lm_pass_plus_n_trainings']:.2f}; sweep / (LM pass + sum of "
        f"Trainer.fit {fits:.0f} s) = {result['ratio_to_lm_pass_plus_fits']:.2f}; cached member k={ks[0]} == live run: "
        f"{same_as_live}",
        flush=True,
    )
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer architectures and members, tiny model")
    p.add_argument("--model", default="tiny", help="model preset for the sweep and e2e ratio (tiny | smollm2_135m)")
    p.add_argument("--d-model", type=int, default=576)
    p.add_argument("--d-sae", type=int, default=4608)
    p.add_argument("--batch", type=int, default=4096)
    p.add_argument("--k", type=int, default=32)
    p.add_argument("--members", type=int, default=None, help="sweep members (default 6; 3 with --quick)")
    p.add_argument("--tokens", type=int, default=None, help="train.tokens per member (default: 20000 for tiny, the config's otherwise)")
    p.add_argument("--sweep-batch", type=int, default=None, help="train.batch_size of the sweep (default: 512 for tiny)")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None, help="torch threads in every benchmark process")
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--compile", action="store_true", help="also torch.compile the SAE in the step benchmark")
    p.add_argument("--sections", default="step,lightning,e2e,sweep")
    p.add_argument("--keep", action="store_true", help="keep the sweep's work directory")
    p.add_argument("--out", default=None, help="write all results here as JSON")
    args = p.parse_args()
    args.members = args.members or (3 if args.quick else 6)
    args.repeats = args.repeats or (3 if args.quick else 5)
    if args.model == "tiny":
        args.tokens = args.tokens or 20_000
        args.sweep_batch = args.sweep_batch or 512
    device = pick_device(args.device)
    args.device = device.type
    sections = args.sections.split(",")
    results: dict = {"machine": machine_info(device), "args": vars(args)}
    print(f"machine: {results['machine']}", flush=True)
    started = time.perf_counter()
    if "step" in sections:
        print(f"SAE step, local loss, d_model={args.d_model} d_sae={args.d_sae} batch={args.batch} k={args.k}:", flush=True)
        results["sae_step"] = sae_steps(args)
    if "lightning" in sections:
        print("Lightning per-step overhead:", flush=True)
        results["lightning"] = lightning(args)
    if "e2e" in sections:
        print(f"e2e / local step cost ({args.model}):", flush=True)
        results["e2e"] = e2e_ratio(args)
    if "sweep" in sections:
        print(f"sweep ({args.model}):", flush=True)
        results["sweep"] = sweep(args)
    results["seconds"] = time.perf_counter() - started
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1, default=str))
        print(f"results: {args.out}")


if __name__ == "__main__":
    main()
