"""The e2e and e2e+ds losses on a tiny random LM: what they compute, where gradients go, and what
work they do per batch. Each test names the property it checks."""

from __future__ import annotations

import copy

import hydra
import lightning as L
import pytest
import torch
from torch import Tensor
from torch.utils.data import DataLoader

from sae_sweeps.losses.e2e import E2EDownstreamLoss, E2ELoss
from sae_sweeps.models import HookPoint
from sae_sweeps.saes.base import SparseAutoencoder, instantiate_sae
from sae_sweeps.saes.relu import ReLUSAE
from sae_sweeps.saes.sparsity import FixedCoefficient
from sae_sweeps.saes.topk import TopKSAE
from sae_sweeps.splicing import next_token_mask, splice_sae
from sae_sweeps.training.module import SAETrainingModule
from sae_sweeps.training.schedules import Schedule

from launch_helpers import CONF, compose_config

D = 16  # the small LM's d_model (conftest.SMALL_LM)


class IdentitySAE(SparseAutoencoder):
    """Reconstruction == input exactly: W_enc = W_dec = I, zero biases, identity nonlinearity."""

    architecture = "identity"
    saelens_architecture = "standard"

    def __init__(self, d_in: int) -> None:
        super().__init__(d_in, d_in)
        with torch.no_grad():
            self.W_enc.copy_(torch.eye(d_in))
            self.W_dec.copy_(torch.eye(d_in))

    def activation(self, pre_acts_BF: Tensor) -> Tensor:
        return pre_acts_BF


def relu_sae(dtype=torch.float64, seed: int = 0) -> ReLUSAE:
    torch.manual_seed(seed)
    sae = ReLUSAE(D, 4 * D)
    with torch.no_grad():
        sae.b_enc.fill_(0.05)  # more latents active, so more parameters carry gradient
    return sae.to(dtype)


def bound(loss, model, hook_name: str):
    loss.bind(model, HookPoint.parse(hook_name))
    return loss


def no_dead(sae) -> Tensor:
    return torch.zeros(sae.d_sae, dtype=torch.bool)


def reference_passes(model, sae, tokens, hook_name: str, input_scale: float, capture: list[str]):
    """Clean and spliced FULL forward passes (no shared prefix), with the named activations cached."""
    ordinary = ~model.special_token_mask(tokens)
    with torch.no_grad():
        clean_logits, clean_cache = model.bridge.run_with_cache(tokens, names_filter=lambda n: n in capture)
        caches = {}

        def splice(acts, hook):
            return splice_sae(sae, acts, ordinary, input_scale).spliced_BTD

        def keep(name):
            def fn(acts, hook):
                caches[name] = acts.clone()

            return fn

        sae_logits = model.bridge.run_with_hooks(
            tokens, fwd_hooks=[(hook_name, splice), *[(n, keep(n)) for n in capture]]
        )
    return clean_logits, sae_logits, {n: clean_cache[n] for n in capture}, caches, ordinary


@pytest.mark.parametrize("kl_coefficient", [1.0, 2.0])
def test_kl_term_is_forward_kl_orig_to_sae_over_ordinary_next_token_positions(make_tokens, small_lm_f64, kl_coefficient):
    """Property: terms['kl'] = kl_coefficient * mean over positions whose token and next token are
    ordinary of KL(P_orig || P_sae), and equals what two independent full forward passes give
    (so sharing the prefix changes nothing); the reverse direction gives a different number."""
    model, hook = small_lm_f64, "blocks.1.hook_resid_pre"
    sae, tokens, scale = relu_sae(), make_tokens(small_lm_f64), 0.7
    out = bound(E2ELoss(kl_coefficient), model, hook)(sae, tokens, scale, 0.0, no_dead(sae))
    clean, spliced, _, _, ordinary = reference_passes(model, sae, tokens, hook, scale, [])
    lp_orig = torch.log_softmax(clean[:, :-1], -1)
    lp_sae = torch.log_softmax(spliced[:, :-1], -1)
    predict = next_token_mask(ordinary)
    forward_kl = (lp_orig.exp() * (lp_orig - lp_sae)).sum(-1)[predict].mean()
    reverse_kl = (lp_sae.exp() * (lp_sae - lp_orig)).sum(-1)[predict].mean()
    assert float(out.terms["kl"]) == pytest.approx(kl_coefficient * float(forward_kl), rel=1e-6)
    assert abs(float(forward_kl) - float(reverse_kl)) > 1e-3 * float(forward_kl)
    assert predict.sum() < predict.numel()  # the batch really has positions to skip


def test_downstream_term_matches_its_formula(make_tokens, small_lm_f64):
    """Property: terms['downstream'] = beta / (L - l) * sum_{k=l+1}^{L-1} mean over ordinary tokens
    of ||s (resid_pre_k spliced - resid_pre_k clean)||^2, here with l = 0, L = 2 (one later block)."""
    model, hook, beta, scale = small_lm_f64, "blocks.0.hook_resid_pre", 3.0, 0.6
    sae, tokens = relu_sae(), make_tokens(small_lm_f64)
    out = bound(E2EDownstreamLoss(0.5, beta), model, hook)(sae, tokens, scale, 0.0, no_dead(sae))
    name = "blocks.1.hook_resid_pre"
    _, _, clean, spliced, ordinary = reference_passes(model, sae, tokens, hook, scale, [name])
    mse = ((spliced[name] - clean[name])[ordinary] * scale).pow(2).sum(-1).mean()
    assert float(out.terms["downstream"]) == pytest.approx(beta / 2 * float(mse), rel=1e-6)
    assert float(out.terms["downstream"]) > 0


@pytest.mark.parametrize("loss_cls", [E2ELoss, E2EDownstreamLoss])
def test_perfect_reconstruction_costs_nothing(make_tokens, small_lm_f64, loss_cls):
    """Property: an SAE whose reconstruction equals its input leaves the LM unchanged, so the KL and
    the downstream term are both zero (up to rounding)."""
    sae = IdentitySAE(D).double()
    loss = bound(loss_cls(), small_lm_f64, "blocks.0.hook_resid_pre")
    for scale in (0.25, 0.7):  # 0.25 round-trips exactly; 0.7 to within rounding
        out = loss(sae, make_tokens(small_lm_f64), scale, 0.0, no_dead(sae))
        assert abs(float(out.terms["kl"])) < 1e-12
        if loss_cls is E2EDownstreamLoss:
            assert abs(float(out.terms["downstream"])) < 1e-20


@pytest.mark.parametrize("loss_cls, hook", [(E2ELoss, "blocks.1.hook_resid_pre"), (E2EDownstreamLoss, "blocks.0.hook_resid_pre")])
def test_sae_gradients_match_central_differences(make_tokens, small_lm_f64, loss_cls, hook):
    """Property: autograd's gradient of the whole loss (KL [+ downstream] + L1) w.r.t. SAE parameter
    entries equals central finite differences, in float64. Tolerance 1%: the LM's RMSNorm, rotary
    and attention softmax compute in float32 internally even in a float64 model, which puts noise of
    ~1e-9 relative into the loss (so a step of 1e-4 is used, where truncation error is negligible)."""
    sae, tokens, scale, coefficient = relu_sae(), make_tokens(small_lm_f64, n_contexts=2, length=10), 0.7, 0.01
    loss = bound(loss_cls(), small_lm_f64, hook)
    objective = lambda: loss(sae, tokens, scale, coefficient, no_dead(sae)).total  # noqa: E731
    sae.zero_grad()
    objective().backward()
    eps, checked = 1e-4, 0
    for name in ("W_enc", "W_dec", "b_enc", "b_dec"):
        param = getattr(sae, name)
        flat_grad = param.grad.flatten()
        for index in flat_grad.abs().topk(2).indices.tolist():  # the entries that matter most
            idx = torch.unravel_index(torch.tensor(index), param.shape)
            with torch.no_grad():
                param[idx] += eps
                up = float(objective())
                param[idx] -= 2 * eps
                down = float(objective())
                param[idx] += eps
            numeric, analytic = (up - down) / (2 * eps), float(flat_grad[index])
            assert analytic == pytest.approx(numeric, rel=1e-2, abs=1e-7), (name, idx)
            checked += 1
    assert checked == 8


def test_one_prefix_pass_clean_pass_without_graph(make_tokens, small_lm, monkeypatch):
    """Property: per batch the layers before the hook run once (residual_before) and both passes
    start from that block with that same tensor; the clean pass keeps no autograd graph; the spliced
    pass does."""
    model = small_lm
    calls = {"prefix": 0, "from": []}
    residual_before, logits_from = model.residual_before, model.logits_from

    def count_prefix(tokens, layer):
        calls["prefix"] += 1
        calls["resid"] = residual_before(tokens, layer)
        return calls["resid"]

    def record_from(resid, layer, fwd_hooks=()):
        logits = logits_from(resid, layer, fwd_hooks)
        calls["from"].append((resid is calls["resid"], layer, logits.requires_grad))
        return logits

    monkeypatch.setattr(model, "residual_before", count_prefix)
    monkeypatch.setattr(model, "logits_from", record_from)
    sae = relu_sae(torch.float32)
    out = bound(E2EDownstreamLoss(), model, "blocks.0.hook_resid_pre")(sae, make_tokens(model), 0.7, 0.01, no_dead(sae))
    assert calls["prefix"] == 1
    assert calls["from"] == [(True, 0, False), (True, 0, True)]
    assert out.total.requires_grad


def test_training_steps_touch_only_the_sae(make_tokens, small_lm):
    """Property: after a few optimiser steps through the real Lightning module with e2e+ds, every LM
    parameter is bit-identical, still requires_grad=False and has no .grad; the SAE has changed."""
    model = small_lm
    before = copy.deepcopy(model.bridge.state_dict())
    sae = relu_sae(torch.float32)
    sae.sparsity = FixedCoefficient(0.01)
    sae_before = copy.deepcopy(sae.state_dict())
    module = SAETrainingModule(
        sae=sae, loss=bound(E2EDownstreamLoss(), model, "blocks.0.hook_resid_pre"),
        schedule=Schedule(total_steps=3, lr_warmup_steps=1, lr_final_fraction=0.1, sparsity_warmup_steps=0),
        lr=1e-2, adam_betas=(0.9, 0.999), input_scale=0.7, dead_window_tokens=1000,
    )
    batches = [make_tokens(model, seed=s) for s in range(3)]
    trainer = L.Trainer(
        max_steps=3, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, gradient_clip_val=10.0, num_sanity_val_steps=0,
    )
    trainer.fit(module, train_dataloaders=DataLoader(batches, batch_size=None))
    assert trainer.global_step == 3
    for name, param in model.bridge.named_parameters():
        assert not param.requires_grad, name
        assert param.grad is None, name
    after = model.bridge.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not torch.equal(sae_before["W_enc"], sae.state_dict()["W_enc"])


@pytest.mark.parametrize("hook", ["blocks.1.hook_mlp_out", "blocks.0.hook_attn_out", "blocks.0.hook_resid_post"])
def test_other_hook_points(make_tokens, small_lm, hook):
    """Property: the e2e losses splice at any per-token hook of a block, not only resid_pre: the loss
    is finite, positive and its gradient reaches the SAE."""
    sae = relu_sae(torch.float32)
    for loss_cls in (E2ELoss, E2EDownstreamLoss):
        sae.zero_grad()
        out = bound(loss_cls(), small_lm, hook)(sae, make_tokens(small_lm), 1.3, 0.01, no_dead(sae))
        out.total.backward()
        assert torch.isfinite(out.total) and out.terms["kl"] > 0
        assert sae.W_enc.grad is not None and sae.W_enc.grad.abs().sum() > 0


def _sae_arch_names() -> list[str]:
    return sorted(p.stem for p in (CONF / "sae_arch").glob("*.yaml"))


@pytest.mark.parametrize("arch", _sae_arch_names())
def test_every_architecture_trains_end_to_end(make_tokens, small_lm, arch):
    """Property: every `sae_arch` config works with e2e and e2e_ds unchanged: the loss (KL, sparsity
    and auxiliary terms) is finite and backpropagates into the SAE's parameters only."""
    cfg = compose_config(["model=tiny", f"sae_arch={arch}", "sparsity.k=4", "logger=none"])
    sae = instantiate_sae(cfg, d_in=D, d_sae=4 * D, total_steps=10, warmup_steps=0)
    dead = torch.zeros(sae.d_sae, dtype=torch.bool)
    dead[::3] = True  # exercise auxiliary losses that revive dead latents
    for loss_cls in (E2ELoss, E2EDownstreamLoss):
        sae.zero_grad()
        out = bound(loss_cls(), small_lm, "blocks.0.hook_resid_pre")(sae, make_tokens(small_lm), 0.7, 0.01, dead)
        out.total.backward()
        assert torch.isfinite(out.total)
        assert {"kl", "sparsity", "auxiliary"} <= out.terms.keys()
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in sae.parameters())
        assert out.firing_counts_F.shape == (sae.d_sae,)


def test_topk_auxiliary_term_is_included(make_tokens, small_lm):
    """Property: architecture terms come from `architecture_terms` (TopK's AuxK appears once latents are dead)."""
    torch.manual_seed(0)
    sae = TopKSAE(D, 4 * D, k=4)
    dead = torch.ones(sae.d_sae, dtype=torch.bool)
    out = bound(E2ELoss(), small_lm, "blocks.1.hook_resid_pre")(sae, make_tokens(small_lm), 0.7, 0.0, dead)
    assert float(out.terms["auxiliary"]) > 0


@pytest.mark.parametrize("name, cls, kl, beta", [("e2e", E2ELoss, 1.0, None), ("e2e_ds", E2EDownstreamLoss, 0.5, 2.5)])
def test_loss_configs_build_the_losses(make_tokens, name, cls, kl, beta):
    """Property: conf/loss/{e2e,e2e_ds}.yaml build the right class with the paper's coefficients,
    settable as loss.kl_coefficient / loss.beta."""
    cfg = compose_config([f"loss={name}", "loss.kl_coefficient=0.25"])
    default = compose_config([f"loss={name}"])
    assert default.loss.name == name
    loss = hydra.utils.instantiate(default.loss.module)
    assert type(loss) is cls and loss.kl_coefficient == kl
    if beta is not None:
        assert loss.beta == beta
    assert hydra.utils.instantiate(cfg.loss.module).kl_coefficient == 0.25


def test_unbound_loss_says_so(make_tokens, small_lm):
    """Property: calling an e2e loss before bind() fails with a message, not an AttributeError."""
    sae = relu_sae(torch.float32)
    with pytest.raises(RuntimeError, match="bind"):
        E2ELoss()(sae, make_tokens(small_lm), 1.0, 0.0, no_dead(sae))
