"""One training run, from a checked config to a run directory holding summary.json and sae/.

`train` reads as the run does: load the LM, build the data, the loss and the SAE, fit, then
evaluate and save. The checks on the config and on the run directory come before (launch.py).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra.utils
import lightning as L
from lightning.pytorch.plugins.environments import SLURMEnvironment
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import IterableDataset

from sae_sweeps.data.corpus import Corpus, input_scale_for, loader
from sae_sweeps.data.streams import RankSlice
from sae_sweeps.evaluation.evaluator import Evaluator
from sae_sweeps.evaluation.reference_passes import cached_reference_passes, compute_reference_passes, reference_passes_key
from sae_sweeps.evaluation.sparse_probing import ProbingUnavailable, SparseProber, sparse_prober
from sae_sweeps.losses import SAELoss
from sae_sweeps.losses.base import input_and_target
from sae_sweeps.models import HookError, HookPoint, LanguageModel
from sae_sweeps.run_config import (
    activation_cache_root, clean_pass_root, dead_window_tokens, dictionary_size, eval_cache_root, every_n_steps, hook_point, preset_widths,
)
from sae_sweeps.run_directory import CHECKPOINT_FINGERPRINT_KEY, config_fingerprint, write_json_atomically
from sae_sweeps.run_logging import log_evaluation, log_summary_to_wandb
from sae_sweeps.saes import SparseAutoencoder
from sae_sweeps.saes.base import instantiate_sae
from sae_sweeps.saes.io import save_sae
from sae_sweeps.summary import SUMMARY_FILENAME, HeldOutMetrics, RunChoices, RunSummary, SparseProbingScores, TrainingRecord
from sae_sweeps.training.callbacks import PeriodicEvaluation
from sae_sweeps.training.checkpointing import ResumableCheckpoints, resumable_checkpoint
from sae_sweeps.training.module import SAETrainingModule
from sae_sweeps.training.performance import PerformanceCallback, configure_process, device_for
from sae_sweeps.training.progress import TokenProgressBar
from sae_sweeps.training.schedules import Schedule

log = logging.getLogger(__name__)


def train(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """Train and evaluate one SAE; write `summary.json` and `sae/` into `run_dir`; return the summary
    (empty on data-parallel ranks other than 0). A run directory holding a checkpoint of this
    config (a requeued or preempted job) resumes from it."""
    configure_process(cfg)  # TF32, threads: before the LM first runs
    model, hook = load_model(cfg)
    data = Corpus(cfg.data, model, activation_cache_root(cfg), cfg.model.get("hf_name"), clean_pass_root(cfg))
    loss = build_loss(cfg, model, hook)
    n_steps = loss.steps_for_budget(data, cfg.train.tokens, cfg.train.batch_size)
    schedule = build_schedule(cfg, n_steps)
    sae, scales = build_sae(cfg, model, hook, data, schedule)
    fidelity_scale = loss.fidelity_scale(sae, data, cfg.train.batch_size, *scales)
    loss.auxiliary_weight = fidelity_scale  # the architecture's recipe keeps the balance it was tuned for
    sae.sparsity.start_at_fidelity_scale(fidelity_scale)
    evaluator, periodic = build_evaluators(cfg, model, hook, data)
    prober = build_sparse_prober(cfg, hook.read_point, data)  # probes what the SAE reads
    module = build_module(cfg, sae, loss, scales, schedule)
    trainer = build_trainer(cfg, run_dir, run_name(cfg, sae), n_steps, periodic)
    resume_from = resumable_checkpoint(run_dir)  # (checkpoint, its step): a requeued or preempted run
    start_step = resume_from[1] if resume_from else 0
    stream = loss.training_stream(data, hook, cfg.train.batch_size, cfg.train.seed, n_steps, start_step)
    fit(trainer, module, stream, run_dir, resume_from)
    if not trainer.is_global_zero:
        return {}  # all ranks hold the same SAE; one evaluates and writes
    return evaluate_and_save(cfg, run_dir, trainer, module, evaluator, prober, hook)


def load_model(cfg: DictConfig) -> tuple[LanguageModel, HookPoint]:
    """The frozen LM on this run's device, and the hook point checked against it."""
    model: LanguageModel = hydra.utils.instantiate(cfg.model.loader)
    hook = hook_point(cfg)
    model.check_hook(hook)
    model.to(device_for(cfg))
    widths, preset = model.io_widths(hook), preset_widths(cfg, hook)
    if widths != preset:
        raise HookError(f"model preset {cfg.model.name}: says widths (in, out) {preset} but {hook.key} has {widths}")
    return model, hook


def build_loss(cfg: DictConfig, model: LanguageModel, hook: HookPoint) -> SAELoss:
    loss: SAELoss = hydra.utils.instantiate(cfg.loss.module)
    loss.bind(model, hook)
    return loss


def build_sae(
    cfg: DictConfig, model: LanguageModel, hook: HookPoint, data: Corpus, schedule: Schedule
) -> tuple[SparseAutoencoder, tuple[float, float]]:
    """The SAE (a transcoder when the hook has an output, with a skip path with `hook.skip`) at its
    initialisation, with what sets its L0; and the scales (input, output) that make E||s x||^2 =
    train.input_mean_squared_norm for what it reads and for what it reconstructs (equal for an SAE)."""
    # Seed right before the first random draw, so that nothing before it (a model built on first
    # use rather than loaded from cache, say) changes the run.
    L.seed_everything(cfg.train.seed, workers=True, verbose=False)
    d_in, d_out = model.io_widths(hook)
    sae = instantiate_sae(
        cfg, d_in, dictionary_size(cfg, d_in), schedule.total_steps, schedule.sparsity_warmup_steps,
        d_out if hook.is_transcoder else None, bool(cfg.hook.get("skip", False)),
    )
    sae.scale_encoder(cfg.sae_arch.encoder_init_scale)
    x_ND, target_ND = input_and_target(sae, data.sample_activations(hook))
    input_scale = input_scale_for(x_ND, cfg.train.input_mean_squared_norm)
    output_scale = input_scale_for(target_ND, cfg.train.input_mean_squared_norm) if sae.is_transcoder else input_scale
    if cfg.sae_arch.init_b_dec == "mean":
        sae.initialize_decoder_bias(target_ND * output_scale)
    sae.initialize_from_sample(x_ND * input_scale)
    return sae, (input_scale, output_scale)


def build_evaluators(cfg: DictConfig, model: LanguageModel, hook: HookPoint, data: Corpus) -> tuple[Evaluator, Evaluator]:
    """The final evaluation on `data.eval_contexts` held-out contexts, and the one during training
    on the first `data.periodic_eval_contexts` of them (the curves' points, each with its standard
    error); both on one set of reference passes, shared on disk with other runs."""
    held_out_NT = data.held_out_contexts()
    batch = cfg.data.eval_batch_contexts
    root = eval_cache_root(cfg)
    if root is None:
        reference = compute_reference_passes(model, hook, held_out_NT, batch)
    else:
        key = reference_passes_key(data.cache_fields(hook), held_out_NT, batch)
        reference = cached_reference_passes(root, key, model, hook, held_out_NT, batch)
    n_periodic = cfg.data.periodic_eval_contexts
    final = Evaluator(model, hook, held_out_NT, reference, batch)
    periodic = Evaluator(model, hook, held_out_NT[:n_periodic], reference.first(n_periodic), batch)
    return final, periodic


def build_sparse_prober(cfg: DictConfig, hook: HookPoint, data: Corpus) -> SparseProber | None:
    """k-sparse probing of the data's labels after training (docs/sparse_probing.md), its LM pass shared on
    disk like the reference passes; None when `data.sparse_probing` is off, or, with a one-line note, when
    the data has no labels."""
    if not cfg.data.sparse_probing:
        return None
    try:
        return sparse_prober(
            data, hook, cfg.data.probe_train_documents, cfg.data.probe_held_out_documents, eval_cache_root(cfg),
            cfg.data.lm_batch_size,
        )
    except ProbingUnavailable as note:
        log.info("%s; its summary fields are None", note)
        return None


def build_schedule(cfg: DictConfig, n_steps: int) -> Schedule:
    return Schedule(
        total_steps=n_steps,
        lr_warmup_steps=max(1, int(cfg.train.lr_warmup_fraction * n_steps)),
        lr_final_fraction=cfg.train.lr_final_fraction,
        lr_decay_steps=round(cfg.train.lr_decay_fraction * n_steps),
        sparsity_warmup_steps=int(cfg.sparsity.warmup_fraction * n_steps),
    )


def build_module(
    cfg: DictConfig, sae: SparseAutoencoder, loss: SAELoss, scales: tuple[float, float], schedule: Schedule
) -> SAETrainingModule:
    input_scale, output_scale = scales
    return SAETrainingModule(
        sae=sae,
        loss=loss,
        schedule=schedule,
        lr=cfg.train.lr,
        adam_betas=tuple(cfg.train.adam_betas or sae.default_adam_betas),
        input_scale=input_scale,
        dead_window_tokens=dead_window_tokens(cfg),
        output_scale=output_scale,
    )


def run_name(cfg: DictConfig, sae: SparseAutoencoder) -> str:
    knob, value = sae.sparsity.setting()
    kind = "" if not sae.is_transcoder else f"-{sae_kind(sae)}"
    return f"{cfg.sae_arch.name}{kind}-{cfg.loss.name}-{cfg.hook.name}-{knob}{value:g}"


class FingerprintInCheckpoints(L.Callback):
    """Every checkpoint says which config it belongs to (sae_sweeps/run_directory.py)."""

    def __init__(self, fingerprint: str) -> None:
        self.fingerprint = fingerprint

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        checkpoint[CHECKPOINT_FINGERPRINT_KEY] = self.fingerprint


def build_trainer(cfg: DictConfig, run_dir: Path, name: str, n_steps: int, periodic: Evaluator) -> L.Trainer:
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
    callbacks = [
        PeriodicEvaluation(periodic, every_n_steps(cfg.train.eval_every_fraction, n_steps)),
        ResumableCheckpoints(run_dir, every_n_steps(cfg.train.checkpoint_every_fraction, n_steps)),
        FingerprintInCheckpoints(config_fingerprint(cfg)),
        PerformanceCallback(cfg),
    ]
    if cfg.trainer.get("enable_progress_bar", True):  # Lightning refuses a progress-bar callback when it is off
        callbacks.append(TokenProgressBar(cfg.train.tokens, name))
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


def fit(
    trainer: L.Trainer,
    module: SAETrainingModule,
    global_stream: IterableDataset,
    run_dir: Path,
    resume_from: tuple[Path, int] | None,
) -> None:
    """Train from the start, or from a checkpoint on the global batches that follow it; each
    data-parallel rank trains on its slice of every batch."""
    ckpt_path = resume_from[0] if resume_from else None
    if resume_from:
        log.info("resuming %s from step %d (%s)", run_dir, resume_from[1], ckpt_path)
    stream = RankSlice(global_stream, trainer.global_rank, trainer.world_size)
    trainer.fit(module, train_dataloaders=loader(stream), ckpt_path=ckpt_path)


def evaluate_and_save(
    cfg: DictConfig, run_dir: Path, trainer: L.Trainer, module: SAETrainingModule, evaluator: Evaluator,
    prober: SparseProber | None, hook: HookPoint,
) -> dict[str, Any]:
    """The final held-out evaluation and sparse probing, the saved SAE and summary.json (the summary is
    written last: its presence means the run is complete)."""
    sae = module.sae
    final = evaluator.evaluate(sae, module.input_scale, module.output_scale)
    probing = SparseProbingScores.absent()
    if prober is not None:
        result = prober.score(sae, module.input_scale)
        log.info("%s", result.summary_line())
        probing = result.scores()
    summary = run_summary(cfg, run_dir, module, final, probing, hook).to_json()
    save_sae(sae, run_dir / "sae", module.input_scale, saelens_metadata(cfg, hook), module.output_scale)
    write_json_atomically(run_dir / SUMMARY_FILENAME, summary)
    final_scalars = final.scalars() | {"dead_fraction": summary["dead_fraction"]}
    log_evaluation(trainer.loggers, final_scalars, final.feature_density_histogram, summary["tokens_trained"], trainer.global_step)
    log_summary_to_wandb(trainer.loggers, summary)
    return summary


def run_summary(
    cfg: DictConfig, run_dir: Path, module: SAETrainingModule, final: HeldOutMetrics, probing: SparseProbingScores,
    hook: HookPoint,
) -> RunSummary:
    sae = module.sae
    dead = module.dead_fraction()
    loss_start, loss_end = module.loss_at_start_and_end()
    knob, value = sae.sparsity.setting()
    phase_tokens = module.phase_tokens()
    return RunSummary(
        choices=RunChoices(
            model=cfg.model.name,
            hook=hook.writes,
            hook_layer=hook.output_layer,
            hook_input=hook.name,
            kind=sae_kind(sae),
            sae_arch=cfg.sae_arch.name,
            loss=cfg.loss.name,
            sparsity_knob=knob,
            sparsity_value=value,
            sparsity_coefficient=float(cfg.sparsity.coefficient),
            target_l0=sae.sparsity.target_l0,
            d_in=sae.d_in,
            d_sae=sae.d_sae,
            seed=int(cfg.train.seed),
            sweep_id=cfg.get("sweep_id"),
        ),
        held_out=final,
        training=TrainingRecord(
            dead_fraction=dead,
            alive_latents=round(sae.d_sae * (1 - dead)),
            dead_window_tokens=min(dead_window_tokens(cfg), int(module.tokens_trained)),
            tokens_trained=int(module.tokens_trained),
            train_seconds=round(module.train_seconds(), 3),
            local_tokens=phase_tokens["local"],
            local_seconds=round(module.phase_seconds["local"], 3),
            e2e_tokens=phase_tokens["e2e"],
            e2e_seconds=round(module.phase_seconds["e2e"], 3),
            train_loss_start=loss_start,
            train_loss_end=loss_end,
            final_sparsity_coefficient=float(sae.sparsity.coefficient()),
        ),
        sparse_probing=probing,
        config_fingerprint=config_fingerprint(cfg),
        run_dir=str(run_dir),
        config=OmegaConf.to_container(cfg, resolve=True),
    )


def sae_kind(sae: SparseAutoencoder) -> str:
    """`sae`, `transcoder` or `skip_transcoder` (summary.json's `kind`)."""
    return "sae" if not sae.is_transcoder else "skip_transcoder" if sae.W_skip is not None else "transcoder"


def saelens_metadata(cfg: DictConfig, hook: HookPoint) -> dict[str, Any]:
    return {
        "model_name": cfg.model.get("hf_name") or cfg.model.name,
        "hook_name": hook.name,
        "hook_layer": hook.layer,
        **({"hook_name_out": hook.output, "hook_layer_out": hook.output_layer} if hook.is_transcoder else {}),
        "context_size": cfg.data.context_size,
        "prepend_bos": True,
        "exclude_special_tokens": True,
        "dataset_path": cfg.data.path or cfg.data.hub_name or f"{cfg.data.package}:{cfg.data.package_glob}",
    }
