"""JumpReLU: the straight-through pseudo-derivatives of docs/method.md#jumprelu, on hand-built inputs."""

import pytest
import torch

from sae_sweeps.saes.base import SAEOutput
from sae_sweeps.saes.jumprelu import JumpReLUSAE, JumpReLUWithCounts
from sae_sweeps.saes.topk import per_token_topk_error

EPS = 0.1
THETA = torch.tensor([0.5, 0.5, 0.5, 0.5, 0.5, 0.5])
# inside the kernel window |z - theta| < eps/2 (0.46, 0.52, 0.549) and outside it (0.2, 0.56, 0.9)
Z = torch.tensor([[0.2, 0.46, 0.52, 0.549, 0.56, 0.9]])
IN_WINDOW = torch.tensor([[0.0, 1.0, 1.0, 1.0, 0.0, 0.0]])
ABOVE = torch.tensor([[0.0, 0.0, 1.0, 1.0, 1.0, 1.0]])


def jumprelu(z, theta, eps):
    return JumpReLUWithCounts.apply(z, theta, eps)[0]


def counts(z, theta, eps):
    """sum_b H(z_b - theta): the firing counts, through which the L0 penalty trains theta."""
    return JumpReLUWithCounts.apply(z, theta, eps)[1]


def output_on(sae, pre_acts_BF):
    """The SAE's output for given pre-activations (as if its encoder had produced them)."""
    latents_BF, counts_F = JumpReLUWithCounts.apply(pre_acts_BF, sae.threshold, sae.bandwidth)
    return SAEOutput(latents_BF, sae.decode(latents_BF), pre_acts_BF, counts_F)


def _grads(fn, z, theta, upstream):
    z = z.clone().requires_grad_()
    theta = theta.clone().requires_grad_()
    out = fn(z, theta, EPS)
    out.backward(upstream)
    return out.detach(), z.grad, theta.grad


def test_jumprelu_forward_is_z_times_step():
    out = jumprelu(Z, THETA, EPS)
    assert torch.equal(out, Z * ABOVE)


def test_jumprelu_threshold_gradient_is_minus_theta_over_eps_times_rectangle_kernel():
    upstream = torch.tensor([[1.0, 2.0, -1.0, 3.0, 5.0, 7.0]])
    _, _, grad_theta = _grads(jumprelu, Z, THETA, upstream)
    # d/dtheta = -(theta/eps) K((z - theta)/eps): -5 per unit upstream inside the window, 0 outside
    expected = -(THETA / EPS) * IN_WINDOW[0] * upstream[0]
    assert torch.allclose(grad_theta, expected)
    assert grad_theta[[0, 4, 5]].eq(0).all() and grad_theta[1].item() == pytest.approx(-10.0)


def test_jumprelu_gradient_wrt_pre_activations_is_the_plain_mask():
    upstream = torch.tensor([[1.0, 2.0, -1.0, 3.0, 5.0, 7.0]])
    _, grad_z, _ = _grads(jumprelu, Z, THETA, upstream)
    # H(z - theta) times upstream: no straight-through term on z, even inside the window
    assert torch.equal(grad_z, ABOVE * upstream)


def test_count_threshold_gradient_is_minus_one_over_eps_times_rectangle_kernel_and_none_on_z():
    upstream = torch.tensor([1.0, 2.0, -1.0, 3.0, 5.0, 7.0])
    out, grad_z, grad_theta = _grads(counts, Z, THETA, upstream)
    assert torch.equal(out, ABOVE[0])
    assert torch.allclose(grad_theta, -(1 / EPS) * IN_WINDOW[0] * upstream)
    assert grad_z is None or torch.equal(grad_z, torch.zeros_like(Z))


def test_threshold_gradient_sums_over_the_batch_per_latent():
    z = torch.tensor([[0.52, 0.1], [0.48, 0.2], [0.9, 0.21]])
    theta = torch.tensor([0.5, 0.2])
    out, _, grad_theta = _grads(counts, z, theta, torch.ones(2))
    assert torch.equal(out, torch.tensor([2.0, 1.0]))
    # latent 0: two tokens in its window; latent 1: 0.2 (at theta) and 0.21 in, 0.1 out
    assert torch.allclose(grad_theta, torch.tensor([-2 / EPS, -2 / EPS]))


def test_both_outputs_together_add_their_threshold_gradients():
    """One Function computes f and the counts; backward through both sums the two formulas."""
    up_f = torch.tensor([[1.0, 2.0, -1.0, 3.0, 5.0, 7.0]])
    up_n = torch.tensor([0.5, 1.0, 2.0, -1.0, 1.0, 1.0])
    theta = THETA.clone().requires_grad_()
    f, n = JumpReLUWithCounts.apply(Z, theta, EPS)
    ((f * up_f).sum() + (n * up_n).sum()).backward()
    expected = -(THETA / EPS) * IN_WINDOW[0] * up_f[0] - (1 / EPS) * IN_WINDOW[0] * up_n
    assert torch.allclose(theta.grad, expected)


def test_l0_penalty_is_mean_count_above_threshold_and_trains_only_thresholds():
    sae = JumpReLUSAE(d_in=4, d_sae=6, bandwidth=EPS)
    sae.threshold.data = THETA.clone()
    loss = sae.sparsity_loss(output_on(sae, torch.cat([Z, Z.flip(1)])))
    assert loss.item() == pytest.approx(4.0)  # 4 above threshold in each of the two tokens
    loss.backward()
    assert torch.allclose(sae.threshold.grad, -(1 / EPS) * (IN_WINDOW[0] + IN_WINDOW[0].flip(0)) / 2)
    # through a real forward pass, the L0 term sends nothing to the encoder
    sae.zero_grad()
    sae.sparsity_loss(sae(torch.randn(8, 4))).backward()
    assert sae.W_enc.grad.eq(0).all() and sae.b_enc.grad.eq(0).all()


def test_target_l0_penalty_is_a_smoothed_absolute_distance_with_bounded_slope():
    sae = JumpReLUSAE(d_in=4, d_sae=6, bandwidth=EPS, target_l0=2.0, target_weight=10.0, target_smoothing=0.05)
    sae.threshold.data = THETA.clone()
    out = output_on(sae, Z)
    # L0 = 4, target 2: relative error 1; 10 * 2 * (sqrt(1 + 0.05^2) - 0.05)
    assert sae.sparsity_loss(out).item() == pytest.approx(20 * ((1 + 0.0025) ** 0.5 - 0.05), rel=1e-6)
    # d penalty / d L0 = weight * d / sqrt(d^2 + s^2): never above the weight, ~0 at the target
    l0 = torch.tensor([1.0, 2.0, 2.02, 4.0, 600.0], requires_grad=True)
    sae.target_penalty(l0).sum().backward()
    d = l0.detach() / 2 - 1
    assert torch.allclose(l0.grad, 10 * d / (d**2 + 0.05**2).sqrt())
    assert l0.grad[1] == 0 and l0.grad[0] < 0 < l0.grad[2] < l0.grad[3] < l0.grad[4] < 10.0


def test_target_l0_becomes_the_sweep_knob():
    """Property: with sparsity.target_l0 the run is named by its target and the SAE gets the target penalty."""
    from omegaconf import OmegaConf

    with_target = JumpReLUSAE.sparsity_for(OmegaConf.create({"coefficient": 0.5, "target_l0": 3}), 100, 5)
    assert with_target.setting() == ("target_l0", 3.0) and with_target.sae_arguments() == {"target_l0": 3.0}
    assert with_target.coefficient() == 0.5
    plain = JumpReLUSAE.sparsity_for(OmegaConf.create({"coefficient": 0.5, "target_l0": None}), 100, 5)
    assert plain.setting() == ("coefficient", 0.5) and plain.sae_arguments() == {}


def test_thresholds_are_raw_parameters_clamped_at_zero_after_a_step():
    sae = JumpReLUSAE(d_in=4, d_sae=6)
    assert [n for n, _ in sae.named_parameters()].count("threshold") == 1
    assert torch.allclose(sae.threshold, torch.full((6,), 0.001))
    sae.threshold.data[0] = -0.3
    sae.normalize_decoder()
    assert sae.threshold[0].item() == 0.0 and sae.threshold[1].item() == pytest.approx(0.001)
    assert sae.default_adam_betas == (0.0, 0.999)


def test_threshold_lr_scale_gives_thresholds_their_own_adam_learning_rate():
    """Adam moves each parameter by ~its lr per step: thresholds at 10x lr move 10x as far. The
    multiple applies at the reference width (576); at width d_in it is scaled by sqrt(576 / d_in),
    the ratio of the pre-activations' scales at E||x||^2 = 1."""
    from sae_sweeps.losses.local import LocalLoss
    from sae_sweeps.training.module import SAETrainingModule
    from sae_sweeps.training.schedules import Schedule

    torch.manual_seed(0)
    sae = JumpReLUSAE(d_in=8, d_sae=16, threshold_lr_scale=10.0)
    schedule = Schedule(total_steps=10, lr_warmup_steps=1, lr_final_fraction=1.0, sparsity_warmup_steps=0)
    module = SAETrainingModule(sae, LocalLoss(), schedule, lr=1e-3, adam_betas=(0.0, 0.999),
                               input_scale=1.0, dead_window_tokens=100)
    optimizer = module.configure_optimizers()["optimizer"]
    lr_of = {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}
    assert lr_of[id(sae.threshold)] == pytest.approx(1e-2 * (576 / 8) ** 0.5)
    assert all(lr_of[id(p)] == pytest.approx(1e-3) for n, p in sae.named_parameters() if n != "threshold")
    # at the reference width with multiple 1 the SAE asks for nothing special: a single group, as before
    plain = SAETrainingModule(JumpReLUSAE(576, 16), LocalLoss(), schedule, lr=1e-3, adam_betas=(0.0, 0.999),
                              input_scale=1.0, dead_window_tokens=100)
    assert len(plain.configure_optimizers()["optimizer"].param_groups) == 1
    # four times the width, half the pre-activation scale: half the threshold step
    assert JumpReLUSAE(4 * 576, 16).learning_rate_scales()["threshold"] == pytest.approx(0.5)


def test_with_a_target_the_thresholds_start_where_the_sample_has_l0_equal_to_the_target():
    """Property: after initialize_from_sample, the sample's mean count of latents above threshold is T
    (up to one tie); without a target the thresholds keep threshold_init."""
    torch.manual_seed(0)
    sample_ND = torch.randn(500, 16)
    aimed, plain = JumpReLUSAE(16, 64, target_l0=5), JumpReLUSAE(16, 64)
    for sae in (aimed, plain):
        sae.initialize_from_sample(sample_ND)
    l0 = (aimed.pre_activations(sample_ND) > aimed.threshold).sum(dim=1).float().mean().item()
    assert l0 == pytest.approx(5, abs=1 / 500)
    assert torch.equal(plain.threshold, torch.full((64,), 0.001))


def test_dead_latents_get_a_gradient_back_their_threshold_lowered_and_their_encoder_trained_by_auxk():
    """Property: a latent that never reaches its threshold gets no gradient from the reconstruction or
    the L0 penalty; the auxiliary term gives a dead latent's threshold a positive gradient (Adam then
    lowers it) and its encoder column one through AuxK, and leaves live latents alone."""
    torch.manual_seed(0)
    sae = JumpReLUSAE(d_in=8, d_sae=6, bandwidth=EPS)
    x = torch.randn(32, 8)
    with torch.no_grad():
        sae.threshold.fill_(0.0)
        sae.threshold[0] = 100.0  # latent 0 never fires
    dead = torch.tensor([True, False, False, False, False, False])
    out = sae(x)
    assert out.firing_counts_F[0] == 0
    (out.reconstruction_BD - x).pow(2).sum().backward(retain_graph=True)
    assert sae.W_enc.grad[:, 0].eq(0).all() and sae.threshold.grad[0] == 0  # nothing reaches it otherwise
    sae.zero_grad()
    sae.auxiliary_loss(x, out, dead).backward()
    assert sae.threshold.grad[0] > 0 and sae.threshold.grad[1:].eq(0).all()
    assert sae.W_enc.grad[:, 0].abs().sum() > 0 and sae.W_enc.grad[:, 1:].eq(0).all()
    # nothing dead: no auxiliary term
    assert sae.auxiliary_loss(x, sae(x), torch.zeros(6, dtype=torch.bool)).item() == 0


def test_per_token_term_adds_the_weighted_topk_error_at_k_equal_to_the_target():
    # With a target, the per-token weight multiplies the error of the same dictionary used as a TopK
    # SAE with k = round(target_l0); without a target there is no k, and no term.
    torch.manual_seed(0)
    with_term = JumpReLUSAE(16, 64, target_l0=4.2, per_token_weight=3.0)
    plain = JumpReLUSAE(16, 64, target_l0=4.2)
    plain.load_state_dict(with_term.state_dict())
    x = torch.randn(32, 16)
    dead = torch.zeros(64, dtype=torch.bool)
    out = with_term(x)
    expected = plain.auxiliary_loss(x, out, dead) + 3.0 * per_token_topk_error(with_term, x, out, 4)
    assert torch.allclose(with_term.auxiliary_loss(x, out, dead), expected)
    no_target = JumpReLUSAE(16, 64, per_token_weight=3.0)
    assert no_target.auxiliary_loss(x, no_target(x), dead).item() == 0.0
