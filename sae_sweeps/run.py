"""One training run, from a composed config to a run directory holding summary.json and sae/."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import hydra.utils
import lightning as L
import torch
from lightning.pytorch.plugins.environments import SLURMEnvironment
from omegaconf import DictConfig, OmegaConf

from sae_sweeps.config_checks import check_config, d_sae_for, expected_width
from sae_sweeps.data.datamodule import SAEData, input_scale_for, loader
from sae_sweeps.data.batch_selection import RankSlice
from sae_sweeps.evaluation.evaluator import EvalMetrics, Evaluator
from sae_sweeps.losses import SAELoss
from sae_sweeps.models import HookError, HookPoint, LanguageModel
from sae_sweeps.run_logging import SUMMARY_FILENAME, log_evaluation, log_summary_to_wandb, write_json_atomically
from sae_sweeps.saes import SparseAutoencoder
from sae_sweeps.saes.io import save_sae
from sae_sweeps.training.callbacks import PeriodicEvaluation
from sae_sweeps.training.checkpointing import ResumableCheckpoints, resumable_checkpoint
from sae_sweeps.training.module import SAETrainingModule
from sae_sweeps.training.performance import PerformanceCallback, configure_process
from sae_sweeps.training.progress import TokenProgressBar
from sae_sweeps.training.schedules import Schedule

log = logging.getLogger(__name__)


def build_sae(cfg: DictConfig, d_in: int) -> SparseAutoencoder:
    return hydra.utils.instantiate(cfg.sae_arch.module, d_in=d_in, d_sae=d_sae_for(cfg, d_in))


def sparsity_value(cfg: DictConfig, sae: SparseAutoencoder) -> float:
    """The one number that sets this run's sparsity, whichever knob the architecture uses."""
    return float(cfg.sparsity[sae.sparsity_knob])


def train(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """Train and evaluate one SAE; write `summary.json` and `sae/` into `run_dir`; return the summary.

    A run directory that already holds a checkpoint (a requeued or preempted job) resumes from
    it; with `resume=true`, one that already finished is skipped.
    """
    check_config(cfg)
    finished = completed_summary(run_dir)
    if cfg.resume and finished is not None:
        log.info("%s already finished: skipping (resume=true)", run_dir)
        return finished
    configure_process(cfg)  # TF32, threads: before the LM first runs
    model: LanguageModel = hydra.utils.instantiate(cfg.model.loader)
    hook = HookPoint.parse(cfg.hook.name)
    model.check_hook(hook)
    model.to(device_for(cfg))
    d_in = model.activation_width(hook)
    if d_in != expected_width(cfg, hook):
        raise HookError(f"model preset {cfg.model.name}: says width {expected_width(cfg, hook)} but {hook.name} has {d_in}")

    data = SAEData(cfg.data, model)
    loss: SAELoss = hydra.utils.instantiate(cfg.loss.module)
    loss.bind(model, hook)
    # Seed right before the first random draw, so that nothing before it (a model built on first
    # use rather than loaded from cache, say) changes the run.
    L.seed_everything(cfg.train.seed, workers=True, verbose=False)
    sae = build_sae(cfg, d_in)
    sample_ND = data.sample_activations(hook)
    input_scale = input_scale_for(sample_ND, cfg.train.input_mean_squared_norm)
    if cfg.sae_arch.init_b_dec == "mean":
        sae.initialize_decoder_bias(sample_ND * input_scale)
    evaluator = Evaluator(model, hook, data.held_out_contexts(), cfg.data.eval_batch_contexts)

    n_steps = data.steps_for_budget(loss.input_kind, cfg.train.tokens, cfg.train.batch_size)
    if loss.input_kind == "activations":
        data.use_activation_cache(cfg, n_steps)  # one LM pass shared by every run with the same activations
    module = SAETrainingModule(
        sae=sae,
        loss=loss,
        schedule=Schedule(
            total_steps=n_steps,
            lr_warmup_steps=max(1, int(cfg.train.lr_warmup_fraction * n_steps)),
            lr_final_fraction=cfg.train.lr_final_fraction,
            sparsity_warmup_steps=int(cfg.sparsity.warmup_fraction * n_steps),
        ),
        lr=cfg.train.lr,
        adam_betas=tuple(cfg.train.adam_betas or sae.default_adam_betas),
        sparsity_coefficient=cfg.sparsity.coefficient,
        input_scale=input_scale,
        dead_window_tokens=dead_window_tokens(cfg),
    )
    every_eval = _every(cfg.train.eval_every_fraction, n_steps)
    name = f"{cfg.sae_arch.name}-{cfg.loss.name}-{hook.name}-{sae.sparsity_knob}{sparsity_value(cfg, sae):g}"
    callbacks = [
        PeriodicEvaluation(evaluator, every_eval),
        ResumableCheckpoints(run_dir, _every(cfg.train.checkpoint_every_fraction, n_steps)),
        PerformanceCallback(cfg),
    ]
    if cfg.trainer.get("enable_progress_bar", True):  # Lightning refuses a progress-bar callback when it is off
        callbacks.append(TokenProgressBar(cfg.train.tokens, name))
    trainer = make_trainer(cfg, run_dir, name, n_steps, callbacks)
    resume_from = resumable_checkpoint(run_dir)
    ckpt_path, start_step = resume_from if resume_from else (None, 0)
    if ckpt_path is not None:
        log.info("resuming %s from step %d (%s)", run_dir, start_step, ckpt_path)
    global_stream = data.training_stream(loss.input_kind, hook, cfg.train.batch_size, cfg.train.seed, start_batch=start_step)
    stream = RankSlice(global_stream, trainer.global_rank, trainer.world_size)
    trainer.fit(module, train_dataloaders=loader(stream), ckpt_path=ckpt_path)
    if not trainer.is_global_zero:
        return {}  # all ranks hold the same SAE; one evaluates and writes
    final = evaluator.evaluate(sae, input_scale)
    summary = build_summary(cfg, run_dir, sae, module, final)
    save_sae(sae, run_dir / "sae", input_scale, saelens_metadata(cfg, hook))
    write_json_atomically(run_dir / SUMMARY_FILENAME, summary)
    final_scalars = final.scalars() | {"dead_fraction": summary["dead_fraction"]}
    log_evaluation(trainer.loggers, final_scalars, final.feature_density_histogram, summary["tokens_trained"], trainer.global_step)
    log_summary_to_wandb(trainer.loggers, summary)
    return summary


def completed_summary(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / SUMMARY_FILENAME
    if not path.is_file():
        return None
    summary = json.loads(path.read_text())
    return summary if summary.get("status") == "completed" else None


def _every(fraction: float | None, n_steps: int) -> int:
    return max(1, int(fraction * n_steps)) if fraction else 0


def device_for(cfg: DictConfig) -> torch.device:
    """Where the LM runs: the device Lightning will give this process's SAE."""
    accelerator = cfg.trainer.accelerator
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


def dead_window_tokens(cfg: DictConfig) -> int:
    """Latents silent this long count as dead: `train.dead_window_tokens`, or by default a quarter
    of the budget capped at the 10M tokens of Gao et al."""
    if cfg.train.dead_window_tokens:
        return int(cfg.train.dead_window_tokens)
    return max(1, min(10_000_000, cfg.train.tokens // 4))


def make_trainer(cfg: DictConfig, run_dir: Path, name: str, n_steps: int, callbacks: list[L.Callback]) -> L.Trainer:
    loggers = []
    if cfg.logger is not None:
        loggers.append(
            hydra.utils.instantiate(
                cfg.logger,
                save_dir=str(run_dir),
                run_name=name,
                run_config=OmegaConf.to_container(cfg, resolve=True),
                _recursive_=False,  # the run's own config holds _target_ keys that are not for the logger
                _convert_="all",
            )
        )
    # Our checkpoints handle SLURM's warning signal; Lightning's own requeue would race them.
    plugins = [SLURMEnvironment(auto_requeue=False)] if SLURMEnvironment.detect() else []
    return L.Trainer(
        **OmegaConf.to_container(cfg.trainer, resolve=True),
        plugins=plugins,
        max_steps=n_steps,
        logger=loggers or False,
        callbacks=callbacks,
        default_root_dir=str(run_dir),
        enable_checkpointing=False,
        num_sanity_val_steps=0,
        enable_model_summary=False,
    )


def saelens_metadata(cfg: DictConfig, hook: HookPoint) -> dict[str, Any]:
    return {
        "model_name": cfg.model.get("hf_name") or cfg.model.name,
        "hook_name": hook.name,
        "hook_layer": hook.layer,
        "context_size": cfg.data.context_size,
        "prepend_bos": True,
        "exclude_special_tokens": True,
        "dataset_path": cfg.data.path or cfg.data.hub_name or f"{cfg.data.package}:{cfg.data.package_glob}",
    }


def build_summary(
    cfg: DictConfig,
    run_dir: Path,
    sae: SparseAutoencoder,
    module: SAETrainingModule,
    final: EvalMetrics,
) -> dict[str, Any]:
    dead = module.dead_fraction()
    loss_start, loss_end = module.loss_at_start_and_end()
    return {
        "status": "completed",
        **final.scalars(),
        "dead_fraction": dead,
        "alive_latents": round(sae.d_sae * (1 - dead)),
        "dead_window_tokens": min(dead_window_tokens(cfg), int(module.tokens_trained)),
        "tokens_trained": int(module.tokens_trained),
        "train_seconds": round(module.train_seconds(), 3),
        "train_loss_start": loss_start,
        "train_loss_end": loss_end,
        "model": cfg.model.name,
        "hook": cfg.hook.name,
        "hook_layer": HookPoint.parse(cfg.hook.name).layer,
        "sae_arch": cfg.sae_arch.name,
        "loss": cfg.loss.name,
        "sparsity_value": sparsity_value(cfg, sae),
        "sparsity_coefficient": float(cfg.sparsity.coefficient),
        "k": int(cfg.sparsity.k) if sae.sparsity_knob == "k" else None,
        "d_in": sae.d_in,
        "d_sae": sae.d_sae,
        "seed": int(cfg.train.seed),
        "sweep_id": cfg.get("sweep_id"),
        "run_dir": str(run_dir),
        "feature_density_histogram": final.feature_density_histogram,
        "config": OmegaConf.to_container(cfg, resolve=True),
    }
