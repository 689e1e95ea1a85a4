"""Side by side with a peer library: dictionary_learning 0.1.0's trainers on our training rows, scored by our evaluator.

    PYTHONPATH=/tmp/peer_src OMP_NUM_THREADS=1 .venv/bin/python benchmarks/peer_side_by_side.py \
        --tokens 100000 --arch topk jumprelu batchtopk matryoshka --out /tmp/peer_runs
    ... --tokens 100000 --arch relu gated --l1 0.03 0.06 0.12      # penalty architectures: a few L1 weights
    ... --summary --out /tmp/peer_runs                            # the tables (ReLU/Gated interpolated at L0 32)

What it does, per architecture and budget (issue 14 point 3):
1. The training rows are exactly those our default run trains on at `train.tokens` (our activation
   stream, read from the shared activation cache: 97 x 1024 rows at 100k, 390 x 1024 at 400k; the
   same deterministic stream, so the 100k rows are the first 97 batches of the 400k ones).
2. The peer trains on them with its own loop (`dictionary_learning.training.trainSAE`, one step per
   batch) and its published default recipe at lr 1e-3 (the `dictionary_learning_demo` config:
   `normalize_activations=True`, warm-up 10 steps, sparsity warm-up 50 steps, linear decay from 80% of
   the steps; each trainer's own defaults otherwise: AuxK 1/32, threshold EMA 0.999, JumpReLU
   bandwidth 0.001 and penalty 1.0, Matryoshka groups 1/32, 1/16, 1/8, 1/4, 17/32), dictionary size
   8 x 576 = 4608 as ours, k = 32 (TopK, BatchTopK, Matryoshka), target_l0 = 32 (JumpReLU), and for
   ReLU/Gated the L1 weights given on the command line. One change the run length forces:
   `threshold_start_step` (BatchTopK/Matryoshka/TopK: 1000 by default) is set to the warm-up (10),
   else a 97- or 390-step run never sets the inference threshold (it stays -1: every positive
   pre-activation fires).
3. The saved peer SAE (its norm factor folded in by the peer, so it reads raw activations) is
   converted into our class of the same architecture, and the script ASSERTS that our class
   reproduces the peer's own encode/decode on training rows (relative error < 1e-5; see `check_exact`).
4. Our `Evaluator` scores it on our default held-out contexts (data.eval_contexts = 160): L0, FVU,
   CE loss increase with standard errors; the dead fraction is computed as our runs count it, over
   the last quarter of the training tokens, here with the final SAE.

The peer is NOT a dependency of this repository and must never become one: nothing under
sae_sweeps/ or the tests imports it. To run this script, unpack its wheel somewhere outside the
repo and put that on PYTHONPATH, without its heavy dependencies (nnsight is stubbed below; only its
trainer and dictionary modules, torch, einops, tqdm and wandb are used):

    pip download --no-deps dictionary_learning==0.1.0 -d /tmp/peerdl
    mkdir -p /tmp/peer_src && cd /tmp/peer_src && unzip /tmp/peerdl/dictionary_learning-0.1.0-py3-none-any.whl

Each run leaves OUT/<tokens>/<arch>[-l1<value>]/ with the peer's trainer_0/ae.pt and result.json;
reruns reuse both. One process, one thread (the machine is shared).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import types
from itertools import islice
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_utils import REPO  # noqa: E402

import torch  # noqa: E402

torch.set_num_threads(1)

D_IN, EXPANSION, K, TARGET = 576, 8, 32, 32
D_SAE = D_IN * EXPANSION
LR = 1e-3
WARMUP_STEPS, SPARSITY_WARMUP_STEPS, DECAY_START_FRACTION = 10, 50, 0.8  # dictionary_learning_demo/demo_config.py
MATRYOSHKA_GROUPS = [1 / 32, 1 / 16, 1 / 8, 1 / 4, 1 / 2 + 1 / 32]  # its MatryoshkaBatchTopKTrainerConfig default
ARCHS = ("relu", "gated", "jumprelu", "topk", "batchtopk", "matryoshka")
PENALTY_ARCHS = ("relu", "gated")


# ----------------------------------------------------------------------------------------------
# the peer, imported from PYTHONPATH with nnsight (its activation buffer's dependency) stubbed
def import_peer():
    if "nnsight" not in sys.modules:
        stub = types.ModuleType("nnsight")
        stub.LanguageModel = object  # only the buffer module names it; never used here
        sys.modules["nnsight"] = stub
    try:
        import dictionary_learning  # noqa: F401
    except ImportError as error:
        raise SystemExit(f"the peer is not importable ({error}); put its unpacked wheel on PYTHONPATH (see the docstring)")
    from dictionary_learning import dictionary as peer_dict
    from dictionary_learning import training as peer_training
    from dictionary_learning.trainers import batch_top_k, gdm, jumprelu, matryoshka_batch_top_k, standard, top_k

    return types.SimpleNamespace(
        trainSAE=peer_training.trainSAE,
        StandardTrainer=standard.StandardTrainer, AutoEncoder=peer_dict.AutoEncoder,
        GatedSAETrainer=gdm.GatedSAETrainer, GatedAutoEncoder=peer_dict.GatedAutoEncoder,
        JumpReluTrainer=jumprelu.JumpReluTrainer, JumpReluAutoEncoder=peer_dict.JumpReluAutoEncoder,
        TopKTrainer=top_k.TopKTrainer, AutoEncoderTopK=top_k.AutoEncoderTopK,
        BatchTopKTrainer=batch_top_k.BatchTopKTrainer, BatchTopKSAE=batch_top_k.BatchTopKSAE,
        MatryoshkaTrainer=matryoshka_batch_top_k.MatryoshkaBatchTopKTrainer,
        MatryoshkaSAE=matryoshka_batch_top_k.MatryoshkaBatchTopKSAE,
    )


def peer_config(peer, arch: str, steps: int, l1: float | None) -> dict:
    """The peer's trainer config for one run: its demo's schedule, its trainers' defaults, lr 1e-3."""
    common = dict(
        steps=steps, activation_dim=D_IN, dict_size=D_SAE, layer=6, lm_name="SmolLM2-135M",
        submodule_name="blocks.6.hook_resid_pre", lr=LR, warmup_steps=WARMUP_STEPS,
        decay_start=int(DECAY_START_FRACTION * steps), seed=0, device="cpu", wandb_name=arch,
    )
    if arch == "relu":
        return common | dict(trainer=peer.StandardTrainer, dict_class=peer.AutoEncoder, l1_penalty=l1,
                             sparsity_warmup_steps=SPARSITY_WARMUP_STEPS, resample_steps=None)
    if arch == "gated":
        return common | dict(trainer=peer.GatedSAETrainer, dict_class=peer.GatedAutoEncoder, l1_penalty=l1,
                             sparsity_warmup_steps=SPARSITY_WARMUP_STEPS)
    if arch == "jumprelu":
        return common | dict(trainer=peer.JumpReluTrainer, dict_class=peer.JumpReluAutoEncoder, target_l0=TARGET,
                             sparsity_penalty=1.0, bandwidth=0.001, sparsity_warmup_steps=SPARSITY_WARMUP_STEPS)
    topk_common = dict(k=K, auxk_alpha=1 / 32, threshold_beta=0.999, threshold_start_step=WARMUP_STEPS)
    if arch == "topk":
        return common | topk_common | dict(trainer=peer.TopKTrainer, dict_class=peer.AutoEncoderTopK)
    if arch == "batchtopk":
        return common | topk_common | dict(trainer=peer.BatchTopKTrainer, dict_class=peer.BatchTopKSAE)
    if arch == "matryoshka":
        return common | topk_common | dict(trainer=peer.MatryoshkaTrainer, dict_class=peer.MatryoshkaSAE,
                                           group_fractions=MATRYOSHKA_GROUPS, group_weights=None)
    raise ValueError(arch)


def load_peer_sae(peer, arch: str, path: Path):
    state = torch.load(path, map_location="cpu")
    if arch == "relu":
        ae = peer.AutoEncoder(D_IN, D_SAE)
    elif arch == "gated":
        ae = peer.GatedAutoEncoder(D_IN, D_SAE)
    elif arch == "jumprelu":
        ae = peer.JumpReluAutoEncoder(D_IN, D_SAE)
    elif arch == "topk":
        ae = peer.AutoEncoderTopK(D_IN, D_SAE, K)
    elif arch == "batchtopk":
        ae = peer.BatchTopKSAE(D_IN, D_SAE, K)
    else:
        ae = peer.MatryoshkaSAE(D_IN, D_SAE, K, state["group_sizes"].tolist())
    ae.load_state_dict(state)
    return ae.eval()


class Replay:
    """The training batches, every pass from the first, each a fresh copy (the peer divides in place)."""

    def __init__(self, batches: list[torch.Tensor]) -> None:
        self.batches = batches

    def __iter__(self):
        return (batch.clone() for batch in self.batches)

    def __len__(self) -> int:
        return len(self.batches)


# ----------------------------------------------------------------------------------------------
# conversion into our classes (inference form of each; the peer's norm factor is already folded in)
def to_ours(arch: str, ae, dtype: torch.dtype = torch.float32) -> "torch.nn.Module":
    from sae_sweeps.saes.batchtopk import BatchTopKSAE
    from sae_sweeps.saes.gated import GatedSAE
    from sae_sweeps.saes.jumprelu import JumpReLUSAE
    from sae_sweeps.saes.matryoshka import MatryoshkaSAE
    from sae_sweeps.saes.relu import ReLUSAE
    from sae_sweeps.saes.topk import TopKSAE

    p = {name: value.detach().clone() for name, value in ae.state_dict().items()}
    if arch == "relu":  # relu(W (x - bias) + b) ; W_dec f + bias
        sae = ReLUSAE(D_IN, D_SAE)
        weights = dict(W_enc=p["encoder.weight"].T, b_enc=p["encoder.bias"], W_dec=p["decoder.weight"].T, b_dec=p["bias"])
    elif arch == "gated":  # the same parameterisation as ours (SAELens' gated layout)
        sae = GatedSAE(D_IN, D_SAE)
        weights = dict(W_enc=p["encoder.weight"].T, b_gate=p["gate_bias"], r_mag=p["r_mag"], b_mag=p["mag_bias"],
                       W_dec=p["decoder.weight"].T, b_dec=p["decoder_bias"])
    elif arch == "jumprelu":
        # peer: f = relu(z * (z > theta)), z = x W_enc + b_enc (b_dec NOT subtracted from x);
        # ours: f = z * (z > theta), z = (x - b_dec) W_enc + b_enc. So b_enc' = b_enc + b_dec W_enc, and
        # theta' = max(theta, 0): relu(z 1[z > theta]) = z 1[z > max(theta, 0)].
        sae = JumpReLUSAE(D_IN, D_SAE)
        b_enc = p["b_enc"].double() + p["b_dec"].double() @ p["W_enc"].double()
        weights = dict(W_enc=p["W_enc"], b_enc=b_enc, W_dec=p["W_dec"], b_dec=p["b_dec"], threshold=p["threshold"].clamp_min(0))
    elif arch == "topk":  # topk(relu(z)) = relu(topk(z)) as codes
        sae = TopKSAE(D_IN, D_SAE, K)
        weights = dict(W_enc=p["encoder.weight"].T, b_enc=p["encoder.bias"], W_dec=p["decoder.weight"].T, b_dec=p["b_dec"])
    elif arch == "batchtopk":  # inference: relu(z) 1[relu(z) > theta] = z 1[z > max(theta, 0)]
        sae = BatchTopKSAE(D_IN, D_SAE, K)
        weights = dict(W_enc=p["encoder.weight"].T, b_enc=p["encoder.bias"], W_dec=p["decoder.weight"].T, b_dec=p["b_dec"],
                       threshold=p["threshold"].clamp_min(0))
    else:  # matryoshka: every group active at inference, so the BatchTopK rule over the whole dictionary
        sizes = torch.cumsum(p["group_sizes"], 0).tolist()
        sae = MatryoshkaSAE(D_IN, D_SAE, K, prefix_sizes=sizes)
        weights = dict(W_enc=p["W_enc"], b_enc=p["b_enc"], W_dec=p["W_dec"], b_dec=p["b_dec"],
                       threshold=p["threshold"].clamp_min(0))
    sae = sae.to(dtype)
    with torch.no_grad():
        for name, value in weights.items():
            getattr(sae, name).copy_(value.reshape(getattr(sae, name).shape))
    return sae.eval()


@torch.no_grad()
def compare(ae, sae, rows_ND: torch.Tensor) -> dict:
    """How far our class's codes and reconstructions are from the peer's own encode/decode on these rows."""
    peer_f = ae.encode(rows_ND)
    peer_x_hat = ae.decode(peer_f)
    out = sae(rows_ND)
    ours_f, ours_x_hat = out.latents_BF, out.reconstruction_BD
    return {
        "support_mismatches": int(((peer_f != 0) != (ours_f != 0)).sum()),
        "active": int((peer_f != 0).sum()),
        "max_rel_code_err": float((peer_f - ours_f).abs().max() / peer_f.abs().max().clamp_min(1e-30)),
        "max_rel_recon_err": float((peer_x_hat - ours_x_hat).abs().max() / peer_x_hat.abs().max().clamp_min(1e-30)),
        "peer_forward_is_encode_decode": bool(torch.allclose(ae(rows_ND), peer_x_hat)),
    }


def check_exact(arch: str, ae, rows_ND: torch.Tensor) -> dict:
    """ASSERTS that the conversion is exact: in float64 (peer and ours alike, so that rounding cannot flip a
    latent sitting at its threshold), our class reproduces the peer's own encode/decode on these raw rows,
    with the same latents firing and codes and reconstructions within 1e-5 (relative; they agree to ~1e-12).
    Also returns the float32 comparison (the forms that are evaluated), where rounding in a different order
    of operations may flip a latent whose pre-activation is within ~1e-7 of its threshold."""
    import copy

    ae64 = copy.deepcopy(ae).double()
    exact = compare(ae64, to_ours(arch, ae64, torch.float64), rows_ND.double())
    assert exact["peer_forward_is_encode_decode"], f"{arch}: the peer's forward is not its encode/decode"
    assert exact["support_mismatches"] == 0, f"{arch}: {exact['support_mismatches']} latents fire in one form and not the other"
    assert exact["max_rel_code_err"] < 1e-5 and exact["max_rel_recon_err"] < 1e-5, f"{arch}: {exact}"
    return {"rows": len(rows_ND), "float64": exact, "float32": compare(ae, to_ours(arch, ae), rows_ND)}


@torch.no_grad()
def dead_fraction(sae, batches: list[torch.Tensor]) -> float:
    """Latents that fire on none of the last quarter of the training rows (our runs' window), final SAE."""
    fired = torch.zeros(D_SAE, dtype=torch.bool)
    window = batches[-max(1, math.ceil(len(batches) / 4)):]
    for batch in window:
        fired |= (sae(batch).latents_BF != 0).any(dim=0)
    return 1.0 - float(fired.float().mean())


# ----------------------------------------------------------------------------------------------
# our side: the config, the training rows of our default run, the evaluator
def compose(tokens: int):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=[
            f"train.tokens={tokens}", "logger=none", "data.sparse_probing=false", "train.performance.cpu_threads=1",
        ])


class OurSide:
    """The LM, our default run's training rows at a budget, and our evaluator on the default held-out set."""

    def __init__(self, tokens: int) -> None:
        from sae_sweeps.data.corpus import Corpus
        from sae_sweeps.run import build_loss, load_model
        from sae_sweeps.run_config import activation_cache_root, clean_pass_root

        self.cfg = cfg = compose(tokens)
        assert cfg.sae_arch.expansion_factor * D_IN == D_SAE and cfg.sae_arch.d_sae is None
        self.model, self.hook = load_model(cfg)
        self.data = Corpus(cfg.data, self.model, activation_cache_root(cfg), cfg.model.get("hf_name"), clean_pass_root(cfg))
        loss = build_loss(cfg, self.model, self.hook)
        self.n_steps = loss.steps_for_budget(self.data, cfg.train.tokens, cfg.train.batch_size)
        stream = loss.training_stream(self.data, self.hook, cfg.train.batch_size, cfg.train.seed, self.n_steps, 0)
        self.batches = [batch.float().cpu().clone() for batch in islice(iter(stream), self.n_steps)]
        assert len(self.batches) == self.n_steps and all(b.shape == (cfg.train.batch_size, D_IN) for b in self.batches)
        self._evaluator = None

    @property
    def evaluator(self):
        if self._evaluator is None:
            from sae_sweeps.run import build_evaluators

            self._evaluator = build_evaluators(self.cfg, self.model, self.hook, self.data)[0]
        return self._evaluator


@torch.no_grad()
def calibrated_threshold(ae, batches: list[torch.Tensor], n_batches: int = 10) -> float:
    """What the peer's own threshold EMA tracks (the smallest activation its batch top-k keeps, per batch: its
    `update_threshold`), averaged over the last `n_batches` training batches with the FINAL weights: the value the
    EMA would settle at if training went on unchanged. Only for the `-calibrated` variant (see `main`)."""
    values = []
    for batch in batches[-n_batches:]:
        f = ae.encode(batch, use_threshold=False)
        values.append(float(f[f > 0].min()))
    return sum(values) / len(values)


def run_one(peer, ours: OurSide, arch: str, l1: float | None, out: Path, evaluate: bool, calibrate: bool = False) -> dict:
    name = arch if l1 is None else f"{arch}-l1{l1:g}"
    if calibrate:  # the same trained SAE, its inference threshold recalibrated: trains nothing new
        source = out / str(ours.cfg.train.tokens) / name / "trainer_0" / "ae.pt"
        if not source.exists():
            raise SystemExit(f"{source} is missing: run --arch {arch} first")
        name += "-calibrated"
    run_dir = out / str(ours.cfg.train.tokens) / name
    result_path = run_dir / "result.json"
    if result_path.exists() and (not evaluate or "ce_loss_increase" in json.loads(result_path.read_text())):
        result = json.loads(result_path.read_text())
        if "float64" not in result["exactness"]:  # written before the float64 check: add it (no retraining)
            ae = load_peer_sae(peer, arch, run_dir / "trainer_0" / "ae.pt")
            result["exactness"] = check_exact(arch, ae, torch.cat([ours.batches[0][:256], ours.batches[-1][:256]]))
            if arch in ("batchtopk", "matryoshka") and not calibrate:
                result["inference_threshold"] = float(ae.threshold)
            result_path.write_text(json.dumps(result, indent=1))
        return result
    run_dir.mkdir(parents=True, exist_ok=True)
    ae_path = run_dir / "trainer_0" / "ae.pt"
    config = peer_config(peer, arch, ours.n_steps, l1)
    train_seconds = None
    if not ae_path.exists() and not calibrate:
        start = time.perf_counter()
        torch.manual_seed(0)
        peer.trainSAE(data=Replay(ours.batches), trainer_configs=[dict(config)], steps=ours.n_steps, save_dir=str(run_dir),
                      normalize_activations=True, device="cpu", use_wandb=False, verbose=False)
        train_seconds = round(time.perf_counter() - start, 1)
    if calibrate:
        ae = load_peer_sae(peer, arch, source)
        threshold_as_trained = float(ae.threshold)
        ae.threshold.fill_(calibrated_threshold(ae, ours.batches))
    else:
        ae = load_peer_sae(peer, arch, ae_path)
    sae = to_ours(arch, ae)
    exact = check_exact(arch, ae, torch.cat([ours.batches[0][:256], ours.batches[-1][:256]]))
    peer_cfg = json.loads(((source.parent if calibrate else run_dir / "trainer_0") / "config.json").read_text())["trainer"]
    result = {
        "arch": arch, "l1_penalty": l1, "tokens": ours.n_steps * ours.cfg.train.batch_size, "steps": ours.n_steps,
        "peer_trainer": peer_cfg.get("trainer_class"), "peer_config": peer_cfg, "train_seconds": train_seconds,
        "exactness": exact, "dead_fraction_last_quarter": round(dead_fraction(sae, ours.batches), 5),
        "train_rows_l0_last_batch": float((sae(ours.batches[-1]).latents_BF != 0).sum(-1).float().mean()),
        "load_average_at_start": list(os.getloadavg()),
    }
    if arch in ("batchtopk", "matryoshka"):
        result["inference_threshold"] = float(ae.threshold)
        if calibrate:
            result["inference_threshold_as_trained"] = threshold_as_trained
            result["variant"] = "calibrated"
    if evaluate:
        start = time.perf_counter()
        metrics = ours.evaluator.evaluate(sae, 1.0)
        result["eval_seconds"] = round(time.perf_counter() - start, 1)
        se = metrics.standard_errors
        result |= {
            "l0": metrics.l0, "l0_se": se["l0"], "fvu": metrics.fvu, "fvu_se": se["fvu"],
            "ce_loss_increase": metrics.ce_loss_increase, "ce_loss_increase_se": se["ce_loss_increase"],
            "ce_loss_clean": metrics.ce_loss_clean, "ce_loss_recovered": metrics.ce_loss_recovered,
            "kl": metrics.kl, "eval_tokens": metrics.eval_tokens, "eval_contexts": len(ours.evaluator.contexts_NT),
        }
    result["load_average_at_end"] = list(os.getloadavg())
    result_path.write_text(json.dumps(result, indent=1))
    return result


# ----------------------------------------------------------------------------------------------
# the tables
OURS = {  # docs/results.md, "Recipe changes" (100k, 160 contexts) and "Budget curves" (400k): CE increase, SE
    100000: {"relu": (3.457, 0.043), "gated": (0.968, 0.020), "jumprelu": (0.571, 0.015), "topk": (0.667, 0.017),
             "batchtopk": (0.757, 0.016), "matryoshka": (0.809, 0.018)},
    400000: {"topk": (0.259, 0.026), "relu": (0.640, 0.042), "gated": (0.247, 0.023), "jumprelu": (0.266, 0.026)},
}


def at_target(points: list[dict]) -> dict | None:
    """CE increase and FVU at L0 = 32, linear in log L0 between the two runs that bracket it (analysis/compare.py's
    rule; no extrapolation); the SE from the two runs' SEs as independent."""
    points = sorted((p for p in points if "l0" in p), key=lambda p: p["l0"])
    for lo, hi in zip(points, points[1:]):
        if lo["l0"] <= TARGET <= hi["l0"]:
            w = (math.log10(TARGET) - math.log10(lo["l0"])) / (math.log10(hi["l0"]) - math.log10(lo["l0"]))
            mix = lambda key: (1 - w) * lo[key] + w * hi[key]  # noqa: E731
            se = math.sqrt(((1 - w) * lo["ce_loss_increase_se"]) ** 2 + (w * hi["ce_loss_increase_se"]) ** 2)
            return {"l0": TARGET, "fvu": mix("fvu"), "ce_loss_increase": mix("ce_loss_increase"), "ce_loss_increase_se": se,
                    "dead_fraction_last_quarter": mix("dead_fraction_last_quarter"),
                    "from": [(p["l1_penalty"], round(p["l0"], 1)) for p in (lo, hi)]}
    return None


def summary(out: Path) -> str:
    """One table per budget: every peer run scored, the ReLU/Gated rows interpolated at L0 32, and ours next to them."""
    lines = []
    for tokens_dir in sorted((p for p in out.iterdir() if p.name.isdigit()), key=lambda p: int(p.name)):
        results = [json.loads(p.read_text()) for p in sorted(tokens_dir.glob("*/result.json"))]
        results = [r for r in results if "l0" in r]
        budget = int(tokens_dir.name)
        lines += [f"\n## {budget:,} tokens ({results[0]['steps'] if results else '?'} steps of 1024 rows), held-out: "
                  f"{results[0]['eval_contexts'] if results else '?'} contexts\n",
                  "| arch | peer run | L0 | FVU | CE increase ± SE | dead (last 1/4) | ours: CE increase ± SE | (peer - ours) / SE(diff) |",
                  "|---|---|---|---|---|---|---|---|"]

        def row(arch: str, label: str, r: dict, compare: bool) -> str:
            ours = OURS.get(budget, {}).get(arch) if compare else None
            diff = f"{(r['ce_loss_increase'] - ours[0]) / math.hypot(r['ce_loss_increase_se'], ours[1]):+.1f}" if ours else ""
            ours_text = f"{ours[0]:.3f} ± {ours[1]:.3f}" if ours else ("not given" if compare else "")
            return (f"| {arch} | {label} | {r['l0']:.1f} | {r['fvu']:.3f} | {r['ce_loss_increase']:.3f} ± {r['ce_loss_increase_se']:.3f} "
                    f"| {r['dead_fraction_last_quarter']:.1%} | {ours_text} | {diff} |")

        for arch in ARCHS:
            runs = sorted((r for r in results if r["arch"] == arch), key=lambda r: (r.get("variant", ""), r["l0"]))
            for r in runs:
                label = r["peer_trainer"] + (f", l1 {r['l1_penalty']:g}" if r["l1_penalty"] is not None else "")
                if r.get("variant") == "calibrated":
                    label += f", threshold recalibrated ({r['inference_threshold_as_trained']:.3g} -> {r['inference_threshold']:.3g})"
                elif "inference_threshold" in r:
                    label += f", threshold as trained ({r['inference_threshold']:.3g})"
                lines.append(row(arch, label, r, compare=arch not in PENALTY_ARCHS))
            if arch in PENALTY_ARCHS:
                interpolated = at_target(runs)
                if interpolated is not None:
                    lines.append(row(arch, f"**at L0 32**, linear in log L0 between (l1, L0) {interpolated['from']}", interpolated, True))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=int, default=100000)
    parser.add_argument("--arch", nargs="*", default=[], choices=ARCHS)
    parser.add_argument("--l1", type=float, nargs="*", default=[], help="L1 weights for relu/gated")
    parser.add_argument("--no-eval", action="store_true", help="train, convert and check only (scouting L1 weights)")
    parser.add_argument("--out", type=Path, default=Path("peer_runs"))
    parser.add_argument("--summary", action="store_true")
    parser.add_argument("--calibrate", action="store_true", help=(
        "batchtopk/matryoshka: also score the trained SAE with its inference threshold set to what the peer's EMA "
        "tracks, from the final weights on the last 10 training batches (a deviation from the peer: its EMA, started "
        "at step 10 with beta 0.999, still holds mostly the early value after 97 or 390 steps)"))
    args = parser.parse_args()
    if args.summary:
        print(summary(args.out))
        return
    peer = import_peer()
    ours = OurSide(args.tokens)
    for arch in args.arch:
        for l1 in (args.l1 if arch in PENALTY_ARCHS else [None]):
            if arch in PENALTY_ARCHS and l1 is None:
                raise SystemExit(f"{arch} needs --l1")
            r = run_one(peer, ours, arch, l1, args.out, not args.no_eval)
            if args.calibrate and arch in ("batchtopk", "matryoshka"):
                print(json.dumps({"arch": arch, "l0": r.get("l0"), "ce_loss_increase": r.get("ce_loss_increase")}), flush=True)
                r = run_one(peer, ours, arch, l1, args.out, not args.no_eval, calibrate=True)
                arch_label = f"{arch}-calibrated"
            else:
                arch_label = arch
            keys = ("l0", "fvu", "ce_loss_increase", "ce_loss_increase_se", "dead_fraction_last_quarter",
                    "train_rows_l0_last_batch", "train_seconds", "eval_seconds")
            print(json.dumps({"arch": arch_label, "l1": l1} | {k: r.get(k) for k in keys} | {"exact": r["exactness"]}), flush=True)


if __name__ == "__main__":
    main()
