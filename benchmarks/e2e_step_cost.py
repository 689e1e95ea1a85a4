"""Wall time of one e2e (and e2e+ds) training step relative to one local step, next to the ratio
the cost model of docs/method.md#cost-model predicts; and what local_then_e2e costs per token at
each e2e fraction, relative to full e2e and to local.

    python benchmarks/e2e_step_cost.py                         # model=tiny, seconds
    python benchmarks/e2e_step_cost.py --model smollm2_135m    # the real offline model (minutes on 2 cores)
    python benchmarks/e2e_step_cost.py --fractions 0.05,0.1,0.25

Both steps see the same model, hook, SAE (TopK) and batch of token contexts, and do what the trainer
does per step:
- local: the LM prefix up to the hook (inference mode), the SAE forward/backward on the ordinary
  tokens' activations, one Adam step;
- e2e:   the same prefix once, a clean forward of blocks l..L-1 + unembedding + log-softmax without a
  graph, the spliced forward of the same with a graph, the KL, the backward through those blocks into
  the SAE (the LM's parameters get no gradients), one Adam step.

FLOP model, per token (d = d_model, n = d_sae, V = vocabulary, T = context length, P_i = parameters
of block i, l = hook layer, L = blocks; multiply-add = 2 FLOPs; attention mixing counted without
the causal saving, as in Kaplan et al.):
  block forward           F_i   = 2 P_i + 4 T d             (weights; QK^T and AV)
  block backward (input gradients only, no weight gradients)
                          B_i   = 2 P_i + 8 T d             (dX = dY W^T; scores and values both ways)
  unembedding forward     U     = 2 d V,  its input-gradient backward U again
  log-softmax             S     = 5 V  forward (max, sub, exp, sum, log), 5 V backward
  KL(P_orig || P_sae)     K     = 4 V  forward, 2 V backward
  SAE step                A     = 10 d n  (2dn encode + 2dn decode forward, ~6dn backward)
  local = sum_{i<l} F_i + A
  e2e   = sum_{i<l} F_i                              (shared prefix, once)
        + [sum_{i>=l} F_i + U + S]                   (clean pass, no graph)
        + [sum_{i>=l} F_i + U + S] + K               (spliced pass)
        + [sum_{i>=l} B_i + U + S_bwd + K_bwd]       (backward to the SAE)
        + A
  e2e+ds adds a squared error per later block (~3 d per block, negligible).
  local_cached = A                                   (rows from the activation cache: no prefix)
  e2e_shared   = e2e - sum_{i<l} F_i - sum_{i>=l} F_i (the prefix and the clean blocks from the shared
                                                      clean passes, data/clean_passes.py; U + S stay)
  local_then_e2e(F) per token = (1 - F) local_cached + F e2e_shared   (its two phases, by tokens)
The measured local_then_e2e cost composes the measured steps the same way; the script also prints
how far the KL of a step from the shared clean passes is from the live step's.
Ratios are of FLOPs per token; the script also reports each step's achieved FLOP/s as a fraction of
the machine's measured dense-matmul FLOP/s (docs/method.md#cost-model).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import hydra.utils  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402

from sae_sweeps.data.clean_passes import ContextBatch, compute_clean_passes  # noqa: E402
from sae_sweeps.losses.e2e import E2EDownstreamLoss, E2ELoss  # noqa: E402
from sae_sweeps.losses.local import LocalLoss  # noqa: E402
from sae_sweeps.models import HookPoint, LanguageModel  # noqa: E402
from sae_sweeps.saes.topk import TopKSAE  # noqa: E402

CONF = Path(__file__).resolve().parents[1] / "conf"


def load(model_name: str) -> tuple[LanguageModel, int]:
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        cfg = compose("config", overrides=[f"model={model_name}", "logger=none"])
    return hydra.utils.instantiate(cfg.model.loader), int(cfg.model.default_hook_layer)


def random_contexts(model: LanguageModel, n_contexts: int, length: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    special = torch.tensor(sorted(model.special_token_ids))
    tokens = torch.randint(0, model.vocab_size, (n_contexts, length), generator=generator)
    hit = torch.isin(tokens, special)
    tokens[hit] = (tokens[hit] + 1) % model.vocab_size  # special ids are few; one shift clears them
    tokens[:, 0] = model.bos_token_id
    return tokens


def block_params(model: LanguageModel) -> list[int]:
    """Parameters of each transformer block (weights the block's matmuls touch)."""
    return [sum(p.numel() for p in block.parameters()) for block in model.bridge.blocks]


def predicted_flops(model: LanguageModel, layer: int, n: int, T: int) -> dict[str, float]:
    d, V, P = model.d_model, model.vocab_size, block_params(model)
    F = [2 * p + 4 * T * d for p in P]
    B = [2 * p + 8 * T * d for p in P]
    U, S, S_bwd, K, K_bwd, A = 2 * d * V, 5 * V, 5 * V, 4 * V, 2 * V, 10 * d * n
    prefix = sum(F[:layer])
    later_fwd = sum(F[layer:]) + U + S
    local = prefix + A
    e2e = prefix + 2 * later_fwd + K + sum(B[layer:]) + U + S_bwd + K_bwd + A
    e2e_ds = e2e + 3 * d * (model.n_layers - layer - 1)
    e2e_shared = e2e - prefix - sum(F[layer:])
    return {"local": local, "local_cached": A, "e2e": e2e, "e2e_shared": e2e_shared, "e2e_ds": e2e_ds}


def local_then_e2e_cost(per_token: dict[str, float], fraction: float) -> float:
    """Cost per token of local_then_e2e: its local phase on cached rows, its fine-tune on shared clean passes."""
    return (1 - fraction) * per_token["local_cached"] + fraction * per_token["e2e_shared"]


def matmul_flops_per_second(size: int = 1024, repeats: int = 5) -> float:
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    return 2 * size**3 / min(times)


def make_steps(model: LanguageModel, hook: HookPoint, sae: TopKSAE, tokens: torch.Tensor, shared: ContextBatch, input_scale: float):
    optimizer = torch.optim.Adam(sae.parameters(), lr=1e-4)
    dead = torch.zeros(sae.d_sae, dtype=torch.bool)
    local = LocalLoss()
    e2e, e2e_ds = E2ELoss(), E2EDownstreamLoss()
    e2e.bind(model, hook)
    e2e_ds.bind(model, hook)

    def step(loss_fn, batch):
        optimizer.zero_grad(set_to_none=True)
        out = loss_fn(sae, batch, input_scale, 0.0, dead)
        out.total.backward()
        optimizer.step()

    def local_step():
        acts = model.activations_at(tokens, hook)  # the prefix the activation stream runs
        step(local, acts[~model.special_token_mask(tokens)].clone())

    rows = model.activations_at(tokens, hook)[~model.special_token_mask(tokens)].clone()  # as read from the cache
    return {
        "local": local_step, "local_cached": lambda: step(local, rows), "e2e": lambda: step(e2e, tokens),
        "e2e_shared": lambda: step(e2e, shared), "e2e_ds": lambda: step(e2e_ds, tokens),
    }


def shared_kl_error(model: LanguageModel, hook: HookPoint, sae: TopKSAE, shared: ContextBatch, input_scale: float) -> float:
    """|KL from the shared clean passes - KL of the live step| on one batch, in nats per token."""
    e2e = E2ELoss()
    e2e.bind(model, hook)
    dead = torch.zeros(sae.d_sae, dtype=torch.bool)
    tokens = shared.tokens_BT
    with torch.no_grad():
        live, cached = (float(e2e(sae, batch, input_scale, 0.0, dead).terms["kl"]) for batch in (tokens, shared))
    return abs(live - cached)


def time_step(fn, warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="tiny", help="a conf/model preset (tiny: quick; smollm2_135m: real)")
    parser.add_argument("--layer", type=int, default=None, help="hook layer (default: the preset's)")
    parser.add_argument("--contexts", type=int, default=4, help="contexts per batch")
    parser.add_argument("--context-size", type=int, default=128)
    parser.add_argument("--expansion", type=int, default=8, help="d_sae = expansion x d_model")
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--fractions", default="0.05,0.1,0.25", help="local_then_e2e's e2e fractions to cost")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    model, default_layer = load(args.model)
    layer = default_layer if args.layer is None else args.layer
    hook = HookPoint.parse(f"blocks.{layer}.hook_resid_pre")
    d = model.d_model
    sae = TopKSAE(d, args.expansion * d, k=args.k)
    tokens = random_contexts(model, args.contexts, args.context_size).to(model.device)
    sample = model.activations_at(tokens, hook)[~model.special_token_mask(tokens)]
    input_scale = float((1.0 / sample.pow(2).sum(-1).mean()).sqrt())
    n_tokens = tokens.numel()

    shared = ContextBatch(tokens, *compute_clean_passes(model, hook, tokens, len(tokens)))  # what the clean-pass cache holds
    steps = make_steps(model, hook, sae, tokens, shared, input_scale)
    seconds = {name: time_step(fn, args.warmup, args.repeats) for name, fn in steps.items()}
    flops = predicted_flops(model, layer, sae.d_sae, args.context_size)
    peak = matmul_flops_per_second()

    print(
        f"model={model.name} (L={model.n_layers}, d={d}, V={model.vocab_size}) hook={hook.name} "
        f"SAE=TopK n={sae.d_sae} k={args.k}  batch={args.contexts}x{args.context_size}={n_tokens} tokens  "
        f"threads={torch.get_num_threads()}  median of {args.repeats}"
    )
    print(f"dense matmul (1024^3 fp32): {peak / 1e9:.1f} GFLOP/s")
    print(f"{'step':12} {'s/step':>8} {'tokens/s':>9} {'GFLOP/token':>12} {'efficiency':>10} {'measured/local':>15} {'predicted/local':>16}")
    for name in ("local", "local_cached", "e2e", "e2e_shared", "e2e_ds"):
        achieved = flops[name] * n_tokens / seconds[name]
        print(
            f"{name:12} {seconds[name]:8.3f} {n_tokens / seconds[name]:9.0f} {flops[name] / 1e9:12.4f} "
            f"{achieved / peak:10.1%} {seconds[name] / seconds['local']:15.2f} {flops[name] / flops['local']:16.2f}"
        )
    print(f"shared clean passes: |KL - live KL| = {shared_kl_error(model, hook, sae, shared, input_scale):.2e} nats/token")
    print("local_then_e2e per token (local phase on cached rows, fine-tune on shared clean passes), measured (predicted):")
    print(f"{'e2e_fraction':>12} {'/ full e2e':>16} {'/ e2e shared':>16} {'/ local cached':>16} {'/ local live':>16}")
    for fraction in (float(f) for f in args.fractions.split(",")):
        measured, predicted = local_then_e2e_cost(seconds, fraction), local_then_e2e_cost(flops, fraction)
        ratios = [f"{measured / seconds[name]:7.3f} ({predicted / flops[name]:6.3f})" for name in ("e2e", "e2e_shared", "local_cached", "local")]
        print(f"{fraction:12g} " + " ".join(f"{r:>16}" for r in ratios))


if __name__ == "__main__":
    main()
