"""BatchTopK and Matryoshka: the batch-level budget in training, the batch-independent threshold
at inference, the JumpReLU export, and Matryoshka's nested prefix losses."""

import pytest
import torch

from sae_sweeps.saes.batchtopk import BatchTopKSAE, keep_batch_top_k
from sae_sweeps.saes.jumprelu import JumpReLUSAE
from sae_sweeps.saes.matryoshka import MatryoshkaSAE, resolve_prefix_sizes
from sae_sweeps.saes.topk import TopKSAE, per_token_topk_error


def _sae(cls=BatchTopKSAE, **kwargs):
    torch.manual_seed(0)
    sae = cls(d_in=16, d_sae=64, k=kwargs.pop("k", 5), **kwargs)
    sae.b_enc.data += 0.5  # most pre-activations positive, so the batch budget is always filled
    return sae


def test_training_keeps_exactly_k_times_batch_latents_over_the_whole_batch():
    sae = _sae().train()
    x = torch.randn(32, 16)
    latents = sae(x).latents_BF
    assert int((latents != 0).sum()) == 5 * 32
    per_token = (latents != 0).sum(dim=-1)
    assert per_token.float().mean().item() == 5.0 and per_token.min() < per_token.max()  # varies per token
    # the survivors are the k*B largest pre-activations of the flattened batch
    pre = sae.pre_activations(x).detach()
    cutoff = pre.flatten().topk(5 * 32).values.min()
    assert torch.equal(latents != 0, pre >= cutoff)


def test_keep_batch_top_k_never_keeps_negative_pre_activations():
    pre = -torch.rand(4, 8)
    pre[0, 0] = 2.0
    kept = keep_batch_top_k(pre, 3)
    assert (kept >= 0).all() and int((kept != 0).sum()) == 1


def test_threshold_is_an_ema_of_the_smallest_kept_activation_with_a_warming_up_decay():
    sae = _sae(threshold_decay=0.9).train()
    smallest = []
    with torch.no_grad():
        for step in range(30):
            latents = sae(torch.randn(32, 16)).latents_BF
            smallest.append(latents[latents > 0].min().item())
            if step == 0:
                assert sae.threshold.item() == pytest.approx(smallest[0])  # first batch: set directly
    expected = smallest[0]
    for n, m in enumerate(smallest[1:], start=1):
        decay = min(0.9, (1 + n) / (10 + n))  # 0.18, 0.25, ... then 0.9 from n = 80
        expected = decay * expected + (1 - decay) * m
    assert sae.threshold.item() == pytest.approx(expected, rel=1e-5)
    assert int(sae.threshold_updates) == 30
    assert "threshold" in dict(sae.named_buffers()) and "threshold" not in dict(sae.named_parameters())
    sae.eval()
    with torch.no_grad():
        sae(torch.randn(32, 16))
    assert sae.threshold.item() == pytest.approx(expected, rel=1e-5)  # eval does not update


def test_eval_latents_do_not_depend_on_the_batch_split():
    sae = _sae().train()
    with torch.no_grad():
        for _ in range(3):
            sae(torch.randn(64, 16))
        sae.eval()
        x = torch.randn(20, 16)
        together = sae(x)
        one_at_a_time = [sae(row[None]) for row in x]
        pre = sae.pre_activations(x)
    # the inference rule is z * H(z - threshold) with the one scalar threshold: token by token
    assert torch.equal(together.latents_BF, pre * (pre > sae.threshold))
    for i, single in enumerate(one_at_a_time):
        pre_i = sae.pre_activations(x[i : i + 1]).detach()
        assert torch.equal(single.latents_BF, pre_i * (pre_i > sae.threshold))
    # so the batch changes nothing but the last-bit rounding of a 1-row vs a many-row matmul
    singles = torch.cat([o.latents_BF for o in one_at_a_time])
    assert torch.equal(together.latents_BF != 0, singles != 0)
    assert torch.allclose(together.latents_BF, singles, atol=1e-6)


@pytest.mark.parametrize("cls", [BatchTopKSAE, MatryoshkaSAE])
def test_inference_form_is_a_jumprelu_sae_with_the_scalar_threshold_and_identical_outputs(cls):
    sae = _sae(cls).train()
    with torch.no_grad():
        sae(torch.randn(64, 16))
    exported = sae.inference_form()
    assert isinstance(exported, JumpReLUSAE) and exported.saelens_architecture == "jumprelu"
    assert torch.equal(exported.threshold, torch.full((64,), sae.threshold.item()))
    assert sae.training  # exporting does not change the trained SAE's mode
    sae.eval()
    x = torch.randn(16, 16)
    with torch.no_grad():
        assert torch.equal(exported(x).latents_BF, sae(x).latents_BF)
        assert torch.equal(exported(x).reconstruction_BD, sae(x).reconstruction_BD)


def test_batchtopk_auxiliary_loss_is_topk_auxk_minus_the_pull_on_dead_biases():
    sae = _sae(aux_k=4)
    topk = TopKSAE(d_in=16, d_sae=64, k=5, aux_k=4)
    topk.load_state_dict({k: v for k, v in sae.state_dict().items() if k in topk.state_dict()})
    x = torch.randn(32, 16)
    dead = torch.zeros(64, dtype=torch.bool)
    dead[::3] = True
    out = sae(x)
    pull = sae.dead_bias_pull * sae.b_enc[dead].sum()
    assert torch.allclose(sae.auxiliary_loss(x, out, dead), topk.auxiliary_loss(x, out, dead) - pull)
    assert sae.auxiliary_loss(x, out, torch.zeros(64, dtype=torch.bool)).item() == 0.0


def test_dead_latents_whose_pre_activations_are_all_negative_still_get_their_biases_raised():
    # AuxK's ReLU'd code gives such a latent no gradient: only the pull can bring it back.
    sae = _sae()
    with torch.no_grad():
        sae.b_enc[:8] = -100.0
    dead = torch.zeros(64, dtype=torch.bool)
    dead[:8] = True
    x = torch.randn(32, 16)
    sae.auxiliary_loss(x, sae(x), dead).backward()
    assert torch.allclose(sae.b_enc.grad[:8], torch.full((8,), -sae.dead_bias_pull))
    assert torch.equal(sae.b_enc.grad[8:], torch.zeros(56))  # alive latents: no pull, no AuxK


@pytest.mark.parametrize("cls", [BatchTopKSAE])
def test_per_token_term_is_the_weighted_topk_reconstruction_of_the_same_dictionary(cls):
    # The term the per-token weight multiplies is exactly a TopK SAE's reconstruction error with
    # these weights, while the code the SAE returns stays the batch budget's.
    with_term, without = _sae(cls, per_token_weight=3.0), _sae(cls)
    topk = TopKSAE(d_in=16, d_sae=64, k=5)
    topk.load_state_dict({k: v for k, v in with_term.state_dict().items() if k in topk.state_dict()})
    x = torch.randn(32, 16)
    dead = torch.zeros(64, dtype=torch.bool)
    out = with_term(x)
    assert torch.equal(out.latents_BF, without(x).latents_BF)
    topk_error = (x - topk(x).reconstruction_BD).pow(2).sum(-1).mean()
    assert torch.allclose(per_token_topk_error(with_term, x, out, 5), topk_error, rtol=1e-5)
    assert torch.allclose(
        with_term.auxiliary_loss(x, out, dead), without.auxiliary_loss(x, out, dead) + 3.0 * topk_error, rtol=1e-5
    )


def test_matryoshka_per_token_term_ranks_by_encoder_direction():
    # Property, by hand: Matryoshka's term keeps z, ReLU'd, at each token's k largest
    # (z - b_enc)_i / ||W_enc[:, i]|| (not the k largest z), times the weight; the code stays the batch budget's.
    with_term, without = _sae(MatryoshkaSAE, per_token_weight=3.0), _sae(MatryoshkaSAE)
    with torch.no_grad():
        lengths = torch.rand(64) + 0.2  # unequal column lengths: the two rankings differ
        with_term.W_enc.mul_(lengths)
        without.W_enc.mul_(lengths)
    x = torch.randn(32, 16)
    dead = torch.zeros(64, dtype=torch.bool)
    out = with_term(x)
    assert torch.equal(out.latents_BF, without(x).latents_BF)
    z = with_term.pre_activations(x)
    chosen = ((z - with_term.b_enc) / with_term.W_enc.norm(dim=0)).topk(5, dim=-1).indices
    assert not torch.equal(chosen.sort().values, z.topk(5, dim=-1).indices.sort().values)
    code = torch.zeros_like(z).scatter(-1, chosen, torch.relu(z.gather(-1, chosen)))
    expected = (x - code @ with_term.W_dec - with_term.b_dec).pow(2).sum(-1).mean()
    assert torch.allclose(
        with_term.auxiliary_loss(x, out, dead), without.auxiliary_loss(x, out, dead) + 3.0 * expected, rtol=1e-5
    )


def test_per_token_term_trains_latents_the_batch_budget_leaves_out():
    # A token with small activations gets no latent from the batch budget, hence no gradient from
    # the main term; the per-token term gives its k largest pre-activations one.
    sae = _sae(per_token_weight=1.0).train()
    x = torch.randn(32, 16)
    x[0] *= 1e-3  # a quiet token
    out = sae(x)
    assert int((out.latents_BF[0] != 0).sum()) == 0
    quiet_top = out.pre_acts_BF[0].topk(5).indices
    per_token_topk_error(sae, x, out, 5).backward()
    assert (sae.W_dec.grad[quiet_top].abs().sum(dim=-1) > 0).all()


def test_matryoshka_prefix_sizes_from_fractions_or_absolute_sizes_end_at_d_sae():
    assert resolve_prefix_sizes(128, prefix_fractions=[1 / 16, 0.25, 1.0]) == [8, 32, 128]
    assert resolve_prefix_sizes(128, prefix_sizes=[16, 64]) == [16, 64, 128]
    assert MatryoshkaSAE(16, 64, k=4).prefix_sizes == [4, 8, 16, 32, 64]
    with pytest.raises(ValueError):
        resolve_prefix_sizes(128, prefix_sizes=[64, 32])
    with pytest.raises(ValueError):
        resolve_prefix_sizes(128, prefix_sizes=[8], prefix_fractions=[0.5])


def test_matryoshka_auxiliary_loss_adds_one_reconstruction_term_per_proper_prefix():
    sae = _sae(MatryoshkaSAE, prefix_sizes=[8, 24])
    x = torch.randn(32, 16)
    out = sae(x)
    no_dead = torch.zeros(64, dtype=torch.bool)
    f = out.latents_BF
    expected = sum(
        (x - (f[:, :m] @ sae.W_dec[:m] + sae.b_dec)).pow(2).sum(-1).mean() for m in (8, 24)
    )
    assert torch.allclose(sae.auxiliary_loss(x, out, no_dead), expected, rtol=1e-5)
    # the full-dictionary term is the loss's own reconstruction: decode(f) uses all 64 latents
    assert torch.allclose(out.reconstruction_BD, f @ sae.W_dec + sae.b_dec)
    # latents beyond a prefix get no gradient from that prefix's term
    sae.prefix_reconstruction_loss(x, f.detach()).backward()
    assert sae.W_dec.grad[24:].eq(0).all() and sae.W_dec.grad[:24].abs().sum() > 0
