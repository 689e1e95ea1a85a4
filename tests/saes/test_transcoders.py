"""Transcoders and skip transcoders: every architecture reads one activation and predicts another.

Synthetic pairs with a known answer (y = M x + D^T c(x), c sparse) check what they learn; the export
is checked against the formulas its cfg.json names; the hook pair against the LM's own passes.
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from synthetic import random_unit_directions, train

from sae_sweeps.evaluation.evaluator import Evaluator
from sae_sweeps.evaluation.reference_passes import compute_reference_passes
from sae_sweeps.losses.base import input_and_target
from sae_sweeps.losses.local import LocalLoss
from sae_sweeps.models import HookPoint
from sae_sweeps.saes.batchtopk import BatchTopKSAE
from sae_sweeps.saes.gated import GatedSAE
from sae_sweeps.saes.io import load_sae, save_sae
from sae_sweeps.saes.jumprelu import JumpReLUSAE
from sae_sweeps.saes.matryoshka import MatryoshkaSAE
from sae_sweeps.saes.relu import ReLUSAE
from sae_sweeps.saes.topk import TopKSAE

D_IN, D_OUT, D_SAE = 16, 12, 64
PAIR = HookPoint.parse("blocks.1.mlp.hook_in", "blocks.1.hook_mlp_out")


class SparsePlusLinearPairs:
    """Rows [x, y]: x ~ N(0, I), y = M x + D^T c(x) with c(x) = 3 ReLU(E x - 1.5) over 32 features
    (~2 active per sample): a linear part plus a sparse one, each known."""

    def __init__(self, linear: float, seed: int = 0) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.E_GI = random_unit_directions(32, D_IN, generator)
        self.D_GO = random_unit_directions(32, D_OUT, generator)
        self.M_OI = linear * torch.randn(D_OUT, D_IN, generator=generator) / D_IN**0.5
        self.d = D_IN + D_OUT

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        x_NI = torch.randn(n, D_IN, generator=generator)
        codes_NG = 3 * torch.relu(x_NI @ self.E_GI.T - 1.5)
        return torch.cat([x_NI, x_NI @ self.M_OI.T + codes_NG @ self.D_GO], dim=1)


def held_out_fvu(sae, data: SparsePlusLinearPairs) -> float:
    x_NI, y_NO = input_and_target(sae, data.sample(8192, torch.Generator().manual_seed(99)))
    with torch.no_grad():
        y_hat_NO = sae.eval()(x_NI).reconstruction_BD
    return float((y_NO - y_hat_NO).pow(2).sum() / (y_NO - y_NO.mean(dim=0)).pow(2).sum())


def recovered_directions(sae, data: SparsePlusLinearPairs) -> float:
    """Share of the true output directions D some decoder row matches at cosine > 0.9."""
    W_dec_FO = sae.W_dec.detach() / sae.W_dec.detach().norm(dim=1, keepdim=True)
    return float(((data.D_GO @ W_dec_FO.T).max(dim=1).values > 0.9).float().mean())


def test_a_transcoder_learns_a_sparse_map_from_one_space_to_another():
    """Property: on y = D^T c(x), a TopK transcoder (d_in 16 -> d_out 12) explains most of y's variance and
    its decoder rows find the true output directions."""
    torch.manual_seed(0)
    data = SparsePlusLinearPairs(linear=0.0)
    sae = TopKSAE(D_IN, D_SAE, k=4, d_out=D_OUT)
    train(sae, data, steps=1500)
    assert held_out_fvu(sae, data) < 0.3
    assert recovered_directions(sae, data) > 0.9


def test_a_skip_transcoder_recovers_the_linear_part_and_the_sparse_part_beside_it():
    """Property: on y = M x + D^T c(x), the skip path W_skip converges to M (relative error < 15%; the
    sparse part's own linear trend is small) and the dictionary to D, beating a plain transcoder's FVU."""
    data = SparsePlusLinearPairs(linear=1.0)
    torch.manual_seed(0)
    skip = TopKSAE(D_IN, D_SAE, k=4, d_out=D_OUT, skip=True)
    train(skip, data, steps=1500)
    torch.manual_seed(0)
    plain = TopKSAE(D_IN, D_SAE, k=4, d_out=D_OUT)
    train(plain, data, steps=1500)
    assert float((skip.W_skip.detach() - data.M_OI).norm() / data.M_OI.norm()) < 0.15
    assert recovered_directions(skip, data) > 0.8
    assert held_out_fvu(skip, data) < 0.5 * held_out_fvu(plain, data)


def test_a_skip_path_starts_at_zero_and_adds_its_linear_map():
    """Invariant: W_skip starts at zero (a skip transcoder starts as the plain one); its output is W_skip x on top."""
    torch.manual_seed(0)
    sae = ReLUSAE(D_IN, D_SAE, d_out=D_OUT, skip=True)
    assert sae.W_skip.shape == (D_OUT, D_IN) and not sae.W_skip.any()
    x_BI = torch.randn(5, D_IN)
    plain = sae(x_BI).reconstruction_BD
    with torch.no_grad():
        sae.W_skip.normal_()
    out = sae(x_BI)
    assert torch.allclose(out.reconstruction_BD, plain + x_BI @ sae.W_skip.T, atol=1e-6)
    assert torch.allclose(out.skip_BD, x_BI @ sae.W_skip.T)


def test_a_transcoder_does_not_centre_its_input_by_its_output_bias():
    """Formula: f = act(W_enc x + b_enc): b_dec lives in output space (SAELens' transcoders)."""
    sae = ReLUSAE(D_IN, D_SAE, d_out=D_OUT)
    with torch.no_grad():
        sae.b_dec.normal_()
        sae.b_enc.normal_()
    x_BI = torch.randn(4, D_IN)
    assert torch.allclose(sae.pre_activations(x_BI), x_BI @ sae.W_enc + sae.b_enc, atol=1e-6)


ARCHITECTURES = {
    "relu": lambda **io: ReLUSAE(D_IN, D_SAE, **io),
    "topk": lambda **io: TopKSAE(D_IN, D_SAE, k=8, **io),
    "batchtopk": lambda **io: BatchTopKSAE(D_IN, D_SAE, k=8, **io),
    "jumprelu": lambda **io: JumpReLUSAE(D_IN, D_SAE, threshold_init=0.05, **io),
    "gated": lambda **io: GatedSAE(D_IN, D_SAE, **io),
    "matryoshka": lambda **io: MatryoshkaSAE(D_IN, D_SAE, k=8, **io),
}


def trained_briefly(name: str, skip: bool):
    """A transcoder with every parameter moved off its initialisation (a few steps on the pairs), BatchTopK's
    threshold tracked, so that a round trip that dropped or mis-scaled one would show."""
    torch.manual_seed(0)
    sae = ARCHITECTURES[name](d_out=D_OUT, skip=skip)
    train(sae, SparsePlusLinearPairs(linear=1.0), steps=30, coefficient=1e-3)
    return sae.eval()


@pytest.mark.parametrize("skip", [False, True])
@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_a_saved_transcoder_loads_back_and_takes_raw_activations(tmp_path, name, skip):
    """Invariant: trained on s_in x to predict s_out y, the saved transcoder maps raw x to raw y:
    load_sae(saved)(x) = sae(s_in x) / s_out, for every architecture, with and without the skip path."""
    sae = trained_briefly(name, skip)
    s_in, s_out = 0.5, 4.0
    save_sae(sae, tmp_path, input_scale=s_in, output_scale=s_out)
    loaded = load_sae(tmp_path)
    assert (loaded.d_in, loaded.d_out, loaded.W_skip is not None) == (D_IN, D_OUT, skip)
    x_BI = torch.randn(64, D_IN)
    with torch.no_grad():
        expected = sae.inference_form()(s_in * x_BI).reconstruction_BD / s_out
        assert torch.allclose(loaded(x_BI).reconstruction_BD, expected, atol=1e-5)


SAELENS_FORMULAS = {
    # cfg.json architecture -> f from the pre-activations, as SAELens computes them
    "transcoder": lambda pre, w: torch.relu(pre),
    "skip_transcoder": lambda pre, w: torch.relu(pre),
    "jumprelu_transcoder": lambda pre, w: pre * (pre > w["threshold"]),
    "jumprelu_skip_transcoder": lambda pre, w: pre * (pre > w["threshold"]),
}


@pytest.mark.parametrize(
    ("name", "skip", "architecture"),
    [
        ("relu", False, "transcoder"),
        ("relu", True, "skip_transcoder"),
        ("jumprelu", False, "jumprelu_transcoder"),
        ("jumprelu", True, "jumprelu_skip_transcoder"),
        ("batchtopk", True, "jumprelu_skip_transcoder"),
        ("matryoshka", False, "jumprelu_transcoder"),
    ],
)
def test_an_exported_transcoder_is_computed_the_same_by_its_cfg_formulas(tmp_path, name, skip, architecture):
    """The cfg.json names the SAELens architecture; computing y_hat = W_dec^T act(W_enc x + b_enc) + b_dec (+ W_skip x)
    from the saved tensors alone, with no b_dec subtracted from x, equals our loader's output."""
    save_sae(trained_briefly(name, skip), tmp_path, input_scale=0.5, output_scale=2.0,
             metadata={"hook_name": PAIR.name, "hook_name_out": PAIR.output, "hook_layer_out": 1})
    cfg = json.loads((tmp_path / "cfg.json").read_text())
    assert cfg["architecture"] == architecture
    assert (cfg["d_in"], cfg["d_out"], cfg["apply_b_dec_to_input"], cfg["hook_name_out"]) == (D_IN, D_OUT, False, PAIR.output)
    weights = load_file(str(tmp_path / "sae_weights.safetensors"))
    assert ("W_skip" in weights) == skip
    x_BI = torch.randn(64, D_IN)
    pre_BF = x_BI @ weights["W_enc"] + weights["b_enc"]
    y_hat_BO = SAELENS_FORMULAS[architecture](pre_BF, weights) @ weights["W_dec"] + weights["b_dec"]
    if skip:
        y_hat_BO = y_hat_BO + x_BI @ weights["W_skip"].T
    with torch.no_grad():
        assert torch.allclose(load_sae(tmp_path)(x_BI).reconstruction_BD, y_hat_BO, atol=1e-5)


@pytest.mark.parametrize(("name", "own_name"), [("topk", "sae_sweeps.topk_transcoder"), ("gated", "sae_sweeps.gated_skip_transcoder")])
def test_combinations_saelens_has_no_name_for_are_saved_under_our_own(tmp_path, name, own_name):
    save_sae(trained_briefly(name, skip=own_name.endswith("skip_transcoder")), tmp_path)
    assert json.loads((tmp_path / "cfg.json").read_text())["architecture"] == own_name


def test_the_local_loss_reconstructs_a_transcoder_target_at_its_own_scale():
    """Formula: with rows [x, y], the loss is mean ||s_out y - y_hat(s_in x)||^2 plus the architecture's terms."""
    torch.manual_seed(0)
    sae = ReLUSAE(D_IN, D_SAE, d_out=D_OUT)
    rows_BD = SparsePlusLinearPairs(linear=1.0).sample(32, torch.Generator().manual_seed(1))
    out = LocalLoss()(sae, rows_BD, 0.5, 0.0, torch.zeros(D_SAE, dtype=torch.bool), 3.0)
    expected = (3.0 * rows_BD[:, D_IN:] - sae(0.5 * rows_BD[:, :D_IN]).reconstruction_BD).pow(2).sum(dim=-1).mean()
    assert torch.allclose(out.terms["reconstruction"], expected)


def test_a_hook_pair_reads_the_mlp_input_and_its_output_in_one_pass(tiny_model):
    """Invariant: the pair's rows are [mlp.hook_in, hook_mlp_out] side by side, and the second is the MLP of the first."""
    tokens_BT = torch.randint(1, tiny_model.vocab_size, (2, 16))
    rows_BTD = tiny_model.activations_at(tokens_BT, PAIR)
    x_BTI = tiny_model.activations_at(tokens_BT, HookPoint.parse(PAIR.name))
    y_BTO = tiny_model.activations_at(tokens_BT, HookPoint.parse(PAIR.output))
    assert torch.equal(rows_BTD, torch.cat([x_BTI, y_BTO], dim=-1))
    assert tiny_model.io_widths(PAIR) == (64, 64)
    with torch.no_grad():
        assert torch.allclose(tiny_model.bridge.blocks[1].mlp(x_BTI), y_BTO, atol=1e-5)


def test_a_transcoder_that_outputs_zero_is_the_mlp_zero_ablated(tiny_model):
    """Invariant: splicing a transcoder whose every output is 0 gives exactly the CE with the MLP's output
    zero-ablated, and an FVU of sum ||y||^2 / sum ||y - mean||^2 > 1."""
    sae = ReLUSAE(64, 128, d_out=64).eval()
    with torch.no_grad():
        sae.W_dec.zero_()
    contexts_NT = torch.randint(1, tiny_model.vocab_size, (4, 24))
    contexts_NT[:, 0] = tiny_model.bos_token_id
    reference = compute_reference_passes(tiny_model, PAIR, contexts_NT, batch_contexts=2)
    metrics = Evaluator(tiny_model, PAIR, contexts_NT, reference, batch_contexts=2).evaluate(sae, 0.5, 2.0)
    assert metrics.ce_loss_sae == pytest.approx(metrics.ce_loss_zero_ablation, abs=1e-6)
    assert metrics.ce_loss_recovered == pytest.approx(0.0, abs=1e-6)
    assert metrics.fvu > 1
