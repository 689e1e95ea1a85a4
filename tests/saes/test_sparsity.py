"""What sets L0: one object per SAE, built by its architecture from `cfg.sparsity`
(sae_sweeps/saes/sparsity.py); `sparsity.target_l0` reaches every architecture."""

from __future__ import annotations

import math

import pytest
import torch

from sae_sweeps.saes.base import instantiate_sae
from sae_sweeps.saes.gated import GatedSAE
from sae_sweeps.saes.relu import ReLUSAE
from sae_sweeps.saes.sparsity import CoefficientController, FixedCoefficient, HardBudget, TargetPenalty
from sae_sweeps.summary import CHOICE_KEYS, METRIC_KEYS

from launch_helpers import compose_config

ARCHITECTURES = ("relu", "gated", "jumprelu", "topk", "batchtopk", "matryoshka")


def controller(adapt_from_step: int = 0, freeze_at_step: int = 100, horizon_steps: float = 0.0,
               anti_windup_steps: float = 0.0) -> CoefficientController:
    return CoefficientController(
        initial_coefficient=0.1, target_l0=20, adapt_from_step=adapt_from_step, freeze_at_step=freeze_at_step,
        gain=0.02, proportional_gain=0.5, l0_decay=0.9, horizon_steps=horizon_steps, anti_windup_steps=anti_windup_steps,
    )


def steer(sparsity: CoefficientController, l0: float | list[float], steps: range) -> list[float]:
    """The coefficient after each of `steps`, the batches' L0 being `l0` throughout (or `l0[i]` at the i-th)."""
    l0s = l0 if isinstance(l0, list) else [l0] * len(steps)
    coefficients = []
    for step, batch_l0 in zip(steps, l0s, strict=True):
        sparsity.observe(torch.tensor(batch_l0), step)
        coefficients.append(float(sparsity.coefficient()))
    return coefficients


@pytest.mark.parametrize("l0, direction", [(40.0, 1), (10.0, -1), (20.0, 0)])
def test_controller_raises_the_coefficient_when_l0_is_above_target_and_lowers_it_below(l0, direction):
    """Property: too many active latents -> a larger penalty, too few -> a smaller one, on target -> unchanged;
    the coefficient keeps moving while the error lasts."""
    coefficients = steer(controller(), l0, range(10))
    steps = [b - a for a, b in zip([0.1, *coefficients], coefficients)]
    if direction == 0:
        assert coefficients == pytest.approx([0.1] * 10)
    else:
        assert all(direction * step > 0 for step in steps)


def test_controller_waits_for_the_warm_up_and_holds_the_coefficient_fixed_from_the_freeze_step():
    """Property: before adapt_from_step (the coefficient's warm-up) and from freeze_at_step on, the
    coefficient does not move, whatever the L0."""
    sparsity = controller(adapt_from_step=5, freeze_at_step=15)
    during_warm_up = steer(sparsity, 80.0, range(5))
    adapting = steer(sparsity, 80.0, range(5, 15))
    frozen = steer(sparsity, 1.0, range(15, 40))
    assert during_warm_up == pytest.approx([0.1] * 5)
    assert adapting[-1] > adapting[0] > 0.1
    assert frozen == [adapting[-1]] * 25


def test_controller_with_a_horizon_eases_off_before_a_falling_l0_reaches_the_target():
    """Property: L0 above the target but falling 10% per step: steering by the L0 extrapolated 10 steps
    ahead lowers the coefficient step after step while the L0 is still above target; steering by
    today's L0 keeps it above where it started, and above the one looking ahead (from the second step, when
    there is a trend to extrapolate)."""
    falling = [60.0 * 0.9**step for step in range(10)]  # 60 -> 23, all above the target of 20
    ahead = steer(controller(horizon_steps=10), falling, range(10))
    now = steer(controller(horizon_steps=0), falling, range(10))
    assert all(later < earlier for earlier, later in zip(ahead[1:], ahead[2:]))
    assert all(looking_now > max(0.1, looking_ahead) for looking_now, looking_ahead in zip(now[1:], ahead[1:]))


def integral_after_each(sparsity: CoefficientController, l0s: list[float]) -> list[float]:
    integrals = []
    for step, l0 in enumerate(l0s):
        sparsity.observe(torch.tensor(l0), step)
        integrals.append(float(sparsity.integral))
    return integrals


def test_controller_integral_holds_while_a_falling_l0_already_reaches_the_target():
    """Property (anti-windup): L0 falling by ~10% per step from 3x the target, so that its trend reaches T
    within 30 steps: with anti_windup_steps 30 the integral does not rise once there is a trend; without, it
    rises every step."""
    falling = [60.0 * 0.9**step for step in range(12)]
    held = integral_after_each(controller(anti_windup_steps=30), falling)
    pushing = integral_after_each(controller(), falling)
    assert held[2:] == [held[1]] * 10
    assert all(later > earlier for earlier, later in zip(pushing[1:], pushing[2:]))


def test_controller_integral_keeps_lowering_the_coefficient_while_l0_below_target_rises():
    """Property: the hold is one-sided. L0 at a third of the target and rising by ~10% per step: the integral
    falls exactly as without the anti-windup (latents pushed off come back slowly, so c must not stay high)."""
    rising = [6.0 * 1.1**step for step in range(12)]
    assert integral_after_each(controller(anti_windup_steps=30), rising) == integral_after_each(controller(), rising)
    assert integral_after_each(controller(), rising)[-1] < integral_after_each(controller(), rising)[0]


def test_controller_integral_still_pushes_when_the_trend_is_too_slow_to_reach_the_target():
    """Property: L0 falling 1% per step from 3x the target would take ~110 steps to reach it, longer than
    anti_windup_steps: the integral keeps rising, exactly as without the anti-windup."""
    slow = [60.0 * 0.99**step for step in range(12)]
    assert integral_after_each(controller(anti_windup_steps=30), slow) == integral_after_each(controller(), slow)


@pytest.mark.parametrize("loss, anti_windup_steps", [("local", 0), ("e2e", 20), ("e2e_ds", 20), ("local_then_e2e", 0)])
def test_the_loss_sets_how_long_the_controller_holds_its_integral(loss, anti_windup_steps):
    """Property: the anti-windup window comes from the loss (how late L0 answers the coefficient under it):
    held under the KL-driven losses, never under the local loss."""
    cfg = compose_config(["sae_arch=relu", f"loss={loss}", "sparsity.target_l0=16"])
    assert ReLUSAE.sparsity_for(cfg.sparsity, total_steps=200, warmup_steps=10).anti_windup_steps == anti_windup_steps


@pytest.mark.parametrize("arch, loss, horizon_steps", [
    ("relu", "local", 10), ("relu", "local_then_e2e", 10), ("relu", "e2e", 12), ("relu", "e2e_ds", 12),
    ("gated", "local", 5), ("gated", "e2e", 5),
])
def test_the_architecture_sets_how_far_ahead_the_controller_looks_under_each_loss(arch, loss, horizon_steps):
    """Property: the horizon comes from the architecture (how far its L0 keeps falling once c eases off:
    ReLU's switched-off latents come back slowly, under e2e for longer), per loss where it says so, 5 where
    it says nothing; one value given for the architecture holds for every loss, and an explicit setting wins."""
    sae_class = {"relu": ReLUSAE, "gated": GatedSAE}[arch]
    def horizon(*overrides: str) -> float:
        cfg = compose_config([f"sae_arch={arch}", f"loss={loss}", "sparsity.target_l0=16", *overrides])
        return sae_class.sparsity_for(cfg.sparsity, total_steps=200, warmup_steps=10).horizon_steps
    assert horizon() == horizon_steps
    assert horizon("sparsity.controller.horizon_steps=3") == 3
    if arch == "gated":
        assert horizon("+sae_arch.controller_horizon_steps=7") == 7


def test_controller_step_is_bounded_however_far_l0_is_from_target():
    """Property: the log-error is clipped at 1, so an L0 a thousand times the target moves the
    coefficient no faster than one e times the target."""
    far, near = controller(), controller()
    assert steer(far, 20_000.0, range(5)) == steer(near, 20 * math.e, range(5))


def test_controller_resumes_exactly_from_its_state_dict():
    """Property: a controller restored from another's state_dict (through a checkpoint's round trip
    of torch.save) continues bit-identically."""
    import io

    whole, first_half = controller(horizon_steps=5), controller(horizon_steps=5)
    l0s = [60.0 - 2 * i for i in range(30)]
    for step, l0 in enumerate(l0s[:12]):
        whole.observe(torch.tensor(l0), step)
        first_half.observe(torch.tensor(l0), step)
    buffer = io.BytesIO()
    torch.save(first_half.state_dict(), buffer)
    buffer.seek(0)
    resumed = controller(horizon_steps=5)
    resumed.load_state_dict(torch.load(buffer))
    for step, l0 in enumerate(l0s[12:], start=12):
        whole.observe(torch.tensor(l0), step)
        resumed.observe(torch.tensor(l0), step)
        assert torch.equal(resumed.coefficient(), whole.coefficient())


@pytest.mark.parametrize("arch", ARCHITECTURES)
@pytest.mark.parametrize("target", [None, 16])
def test_every_architecture_takes_sparsity_target_l0(arch, target):
    """Property: with sparsity.target_l0=T every architecture aims at T (TopK-style: k = T; JumpReLU:
    its target penalty; ReLU/Gated: a controller starting at the architecture's default coefficient);
    without one the raw k or coefficient is used as given."""
    cfg = compose_config(["model=tiny", f"sae_arch={arch}", f"sparsity.target_l0={'null' if target is None else target}"])
    sae = instantiate_sae(cfg, d_in=64, d_sae=512, total_steps=100, warmup_steps=5)
    sparsity = sae.sparsity
    assert sparsity.target_l0 == target
    if arch in ("topk", "batchtopk", "matryoshka"):
        assert isinstance(sparsity, HardBudget) and sparsity.coefficient() == 0.0
        assert sae.k == sparsity.k == (target or cfg.sparsity.k)
        assert sparsity.setting() == ("k", float(sae.k))
    elif target is None:
        assert type(sparsity) is FixedCoefficient and sparsity.setting() == ("coefficient", cfg.sae_arch.default_coefficient)
    elif arch == "jumprelu":
        assert isinstance(sparsity, TargetPenalty) and sae.target_l0 == target
        assert sparsity.setting() == ("target_l0", target)
    else:
        assert isinstance(sparsity, CoefficientController) and sparsity.setting() == ("target_l0", target)
        assert float(sparsity.coefficient()) == pytest.approx(cfg.sae_arch.default_coefficient)
        assert (sparsity.adapt_from_step, sparsity.freeze_at_step) == (15, 90)  # start_fraction 0.15, freeze_fraction 0.1


def test_summary_records_the_target_and_the_final_coefficient():
    """Property: the summary contract has the target (a runs-table column to group by) and the coefficient
    training ended with; the landed L0 is the held-out `l0`."""
    assert "target_l0" in CHOICE_KEYS
    assert {"final_sparsity_coefficient", "l0"} <= set(METRIC_KEYS)


def lagged_l0(controller: CoefficientController, total_steps: int, warmup_steps: int, target_coefficient: float,
              steepness: float, lag_steps: float, l0_start: float, seed: int) -> float:
    """The L0 a simulated SAE ends at under `controller`: its log L0 relaxes toward
    log T - steepness * log(c / target_coefficient) by 1/lag_steps of the gap per step, three times
    slower when rising (latents pushed below zero come back slowly), and each batch's L0 carries 5%
    noise. The coefficient warms up linearly, as in training."""
    generator = torch.Generator().manual_seed(seed)
    log_l0, target = math.log(l0_start), controller.target_l0
    for step in range(total_steps):
        c = float(controller.coefficient()) * min(1.0, step / max(1, warmup_steps))
        settled = math.log(target) - steepness * math.log(max(c, 1e-12) / target_coefficient)
        log_l0 += (settled - log_l0) / (lag_steps if settled < log_l0 else 3 * lag_steps)
        controller.observe(torch.tensor(math.exp(log_l0 + 0.05 * float(torch.randn(1, generator=generator)))), step)
    return math.exp(log_l0)


@pytest.mark.parametrize("lag_steps", [3, 10])
@pytest.mark.parametrize("steepness", [0.7, 1.5, 3.6])
@pytest.mark.parametrize("target_coefficient", [0.1, 10.0])
def test_the_shipped_controller_lands_on_lagged_sparsity_within_10_percent(lag_steps, steepness, target_coefficient):
    """Property (closed loop): with conf/sparsity/default.yaml's settings, in 200 steps, started 10x
    away from the coefficient that gives T, on simulated SAEs whose L0 follows the coefficient up to
    10 steps late (30 when rising) and up to 3.6x as steeply (e2e ReLU on SmolLM2 went from L0 52
    to 1 between c = 1 and 3), the final L0 is within 10% of T = 16 and 64. The settings before
    2026-12-04 (moving average decay 0.9, gain 0.06, proportional gain 0.5) missed 3 of these 12
    cases. A guard on stability, not proof of landing: a real SAE is not this plant (today's
    settings with a 10-step horizon missed 2 cases here, landed every case at lag 25 where today's
    miss, and missed ReLU's landing on the default model by 35-65%), so landings are measured on
    real runs (docs/results.md#target-l0-landing). The shipped default horizon (5) is Gated's; ReLU's
    own (10, since 2026-12-05, from real runs) lands 11 of these cases and this plant's lag 10,
    steepness 3.6, T = 16 case at +10.03%."""
    cfg = compose_config(["sae_arch=gated", "sparsity.target_l0=16", "sparsity.coefficient=1.0"]).sparsity
    for target in (16, 64):
        cfg.target_l0 = target
        sae_controller = GatedSAE.sparsity_for(cfg, total_steps=200, warmup_steps=10)
        l0 = lagged_l0(sae_controller, 200, 10, target_coefficient, steepness, lag_steps, l0_start=600.0, seed=target)
        assert abs(l0 / target - 1) < 0.1, f"landed at {l0:.1f} for T = {target}"
