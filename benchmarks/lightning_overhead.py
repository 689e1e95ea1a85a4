"""Lightning's per-step cost: the project's SAETrainingModule under `Trainer.fit` against a plain
PyTorch loop doing the same work (loss, firing statistics, backward, decoder-gradient projection,
Adam, LR schedule, decoder renormalisation), on batches already in memory.

    python benchmarks/lightning_overhead.py --d-model 64 --d-sae 512 --batch 512 --steps 200

With a small SAE the step itself is ~free, so the difference is the framework's overhead per
step (ms); at the target size it shows what fraction of a step that overhead is.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_utils import pick_device, sync  # noqa: E402

import lightning as L  # noqa: E402
from torch.utils.data import DataLoader, IterableDataset  # noqa: E402

from sae_sweeps.losses.local import LocalLoss  # noqa: E402
from sae_sweeps.saes.topk import TopKSAE  # noqa: E402
from sae_sweeps.training.module import SAETrainingModule  # noqa: E402
from sae_sweeps.training.schedules import Schedule  # noqa: E402


class Repeat(IterableDataset):
    def __init__(self, batches: list[torch.Tensor]) -> None:
        self.batches = batches

    def __iter__(self):
        while True:
            yield from self.batches


def make(d: int, n: int, k: int, steps: int) -> SAETrainingModule:
    torch.manual_seed(0)
    sae = TopKSAE(d, n, k=k)
    schedule = Schedule(total_steps=steps, lr_warmup_steps=max(1, steps // 20), lr_final_fraction=0.1, sparsity_warmup_steps=0)
    return SAETrainingModule(
        sae=sae, loss=LocalLoss(), schedule=schedule, lr=1e-4, adam_betas=(0.9, 0.999),
        input_scale=1.0, dead_window_tokens=10**12,
    )


def plain_loop(module: SAETrainingModule, batches: list[torch.Tensor], steps: int, device: torch.device) -> float:
    module = module.to(device)
    sae = module.sae
    optimizer = torch.optim.Adam(sae.parameters(), lr=module.lr, betas=module.adam_betas)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, module.schedule.lr_factor)
    tokens_since_fired = torch.zeros(sae.d_sae, dtype=torch.long, device=device)
    history = []
    sync(device)
    start, cpu_start = time.perf_counter(), time.process_time()
    for step in range(steps):
        batch = batches[step % len(batches)]
        out = module.loss_fn(sae, batch, module.input_scale, 0.0, tokens_since_fired >= module.dead_window_tokens)
        with torch.no_grad():
            tokens_since_fired.add_(len(batch)).masked_fill_(out.firing_counts_F > 0, 0)
        history.append(out.total.detach())
        optimizer.zero_grad(set_to_none=True)
        out.total.backward()
        torch.nn.utils.clip_grad_norm_(sae.parameters(), 10.0)
        sae.remove_gradient_parallel_to_decoder()
        optimizer.step()
        scheduler.step()
        sae.normalize_decoder()
    sync(device)
    return (time.perf_counter() - start) / steps, (time.process_time() - cpu_start) / steps


def lightning_loop(module: SAETrainingModule, batches: list[torch.Tensor], steps: int, device: torch.device, progress_bar: bool) -> float:
    trainer = L.Trainer(
        accelerator="gpu" if device.type == "cuda" else "cpu", devices=1, max_steps=steps, logger=False,
        enable_checkpointing=False, enable_model_summary=False, enable_progress_bar=progress_bar,
        num_sanity_val_steps=0, gradient_clip_val=10.0, log_every_n_steps=10,
    )
    times: list[float] = []

    class Clock(L.Callback):
        def on_train_batch_start(self, *args) -> None:
            if not times:
                sync(device)
                times.extend([time.perf_counter(), time.process_time()])

        def on_train_end(self, *args) -> None:
            sync(device)
            times.extend([time.perf_counter(), time.process_time()])

    trainer.callbacks.append(Clock())
    trainer.fit(module, train_dataloaders=DataLoader(Repeat(batches), batch_size=None))
    return (times[2] - times[0]) / (steps - 1), (times[3] - times[1]) / (steps - 1)


def measure(d: int, n: int, batch: int, k: int, steps: int, device: torch.device) -> dict:
    batches = [torch.randn(batch, d, device=device) / d**0.5 for _ in range(4)]
    plain = [plain_loop(make(d, n, k, steps), batches, steps, device) for _ in range(2)]
    lightning = [lightning_loop(make(d, n, k, steps), batches, steps, device, False) for _ in range(2)]
    with_bar = lightning_loop(make(d, n, k, steps), batches, steps, device, True)
    best = lambda runs, i: min(r[i] for r in runs)  # noqa: E731
    result = {"d_model": d, "d_sae": n, "batch": batch, "k": k, "steps": steps, "device": str(device),
              "threads": torch.get_num_threads()}
    for basis, i in (("wall", 0), ("cpu", 1)):
        p, lt, bar = best(plain, i), best(lightning, i), with_bar[i]
        result |= {
            f"plain_ms_{basis}": p * 1e3, f"lightning_ms_{basis}": lt * 1e3, f"lightning_progress_bar_ms_{basis}": bar * 1e3,
            f"overhead_ms_{basis}": (lt - p) * 1e3, f"overhead_fraction_{basis}": lt / p - 1,
        }
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--d-model", type=int, default=64)
    p.add_argument("--d-sae", type=int, default=512)
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--k", type=int, default=32)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    import logging

    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    print(json.dumps(measure(args.d_model, args.d_sae, args.batch, args.k, args.steps, pick_device(args.device))))


if __name__ == "__main__":
    main()
