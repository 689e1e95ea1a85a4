"""The one interface every SAE architecture implements: encode, decode, and its loss terms.

Shapes: B tokens in a batch, D = d_in (the model's width at the hook), F = d_sae (dictionary size).
Forward pass (docs/method.md#forward-pass): f = act(W_enc (x - b_dec) + b_enc), x_hat = W_dec^T f + b_dec.

Every architecture is also a transcoder (docs/method.md#transcoders) when built with `d_out`: it reads x
(width d_in) and predicts y at another hook (width d_out), f = act(W_enc x + b_enc), y_hat = W_dec^T f +
b_dec (b_dec lives in output space, so it is not subtracted from x), and with `skip` a skip transcoder
adds a learned linear map W_skip x (initialised at zero).

What belongs to an architecture lives in its class: its nonlinearity and loss terms, the object
that sets its L0 (`sparsity_for` builds `sae.sparsity`, saes/sparsity.py), the checks on that
setting (`check_config`) and any fast path it has (`enable_fast_path`). The trainer, run.py and the
config checks call only these.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

import torch
from torch import Tensor, nn

from sae_sweeps.saes.sparsity import CoefficientController, FixedCoefficient, Sparsity

if TYPE_CHECKING:
    from omegaconf import DictConfig


class SettingError(ValueError):
    """An architecture setting that cannot work; the message names the config key."""


class SAEOutput(NamedTuple):
    """What one forward pass of an SAE produces."""

    latents_BF: Tensor
    """The sparse code f, after the architecture's nonlinearity."""
    reconstruction_BD: Tensor
    """x_hat, the decoder's reconstruction of the input (a transcoder's prediction of its output, skip path included)."""
    pre_acts_BF: Tensor
    """Encoder pre-activations W_enc (x - b_dec) + b_enc (the gate path for Gated SAEs)."""
    firing_counts_F: Tensor
    """How many of the batch's tokens each latent fired on (for L0 and dead-latent statistics);
    JumpReLU's is differentiable in the thresholds, which its L0 penalty needs."""
    skip_BD: Tensor | None = None
    """A skip transcoder's linear part W_skip x, included in the reconstruction (None without a skip path)."""


def firing_counts(latents_BF: Tensor) -> Tensor:
    """How many tokens each latent is non-zero on."""
    return (latents_BF != 0).reshape(-1, latents_BF.shape[-1]).sum(dim=0)


class SparseAutoencoder(nn.Module, ABC):
    """A dictionary of F features over a D-dimensional activation space.

    Subclasses define the nonlinearity and their own loss terms; the trainer only ever calls
    `forward`, `sparsity_loss`, `auxiliary_loss` and the decoder-norm maintenance methods.
    """

    architecture: ClassVar[str]
    """Our name for the architecture (the `sae_arch` config choice)."""
    saelens_architecture: ClassVar[str]
    """The `architecture` value SAELens expects in cfg.json for the saved (inference) form."""
    default_adam_betas: ClassVar[tuple[float, float]] = (0.9, 0.999)
    """Adam betas the architecture's paper recommends; `train.adam_betas` overrides them."""
    activation_unit_params: ClassVar[tuple[str, ...]] = ("b_enc", "b_dec")
    """Parameters measured in units of the input; they are divided by the input scale when it is folded."""
    local_reconstruction_weight: ClassVar[float] = 0.0
    """The weight of the local reconstruction error of its own forward pass that the architecture needs in
    every objective; a loss whose fidelity term gives it less (e2e: none) adds the rest, times its
    `auxiliary_weight` (losses/base.py `architecture_terms`). 0: the fidelity term alone trains it."""

    def __init__(self, d_in: int, d_sae: int, d_out: int | None = None, skip: bool = False) -> None:
        """An SAE over d_in-dimensional activations; with `d_out` a transcoder predicting d_out-dimensional
        ones, and with `skip` also a skip transcoder."""
        super().__init__()
        if skip and d_out is None:
            raise ValueError("skip=True needs d_out: a skip path maps a transcoder's input to its output")
        self.d_in = d_in
        self.d_sae = d_sae
        self.d_out = d_out
        """The output width of a transcoder; None for an SAE, which reconstructs its own d_in-wide input."""
        W_dec_FD = torch.randn(d_sae, d_out or d_in)
        W_dec_FD /= W_dec_FD.norm(dim=1, keepdim=True)
        self.W_dec = nn.Parameter(W_dec_FD)
        if d_out is None:
            # Tied at init, untied afterwards: every latent starts as a matched detector/writer pair.
            W_enc_DF = W_dec_FD.T.clone().contiguous()
        else:  # input and output spaces differ: no tie, unit-norm random detectors
            W_enc_DF = torch.randn(d_in, d_sae)
            W_enc_DF /= W_enc_DF.norm(dim=0, keepdim=True)
        self.W_enc = nn.Parameter(W_enc_DF)
        self.b_enc = nn.Parameter(torch.zeros(d_sae))
        self.b_dec = nn.Parameter(torch.zeros(d_out or d_in))
        self.W_skip = nn.Parameter(torch.zeros(d_out, d_in)) if skip else None
        """A skip transcoder's linear map [d_out, d_in] (SAELens' layout), starting at zero; None otherwise."""
        self.sparsity: Sparsity = FixedCoefficient(0.0)
        """What sets L0 in training; a run sets it from its config (`instantiate_sae`)."""

    # -- the forward pass -------------------------------------------------------------------
    def encoder_bias(self) -> Tensor:
        return self.b_enc

    @property
    def is_transcoder(self) -> bool:
        return self.d_out is not None

    def pre_activations(self, x_BD: Tensor) -> Tensor:
        # W_enc (x - b_dec) + b_enc with b_dec moved into the bias: the same function, but
        # autograd no longer spends a [B, F] x [F, D] matmul on the gradient of x - b_dec.
        # addmm adds the bias inside the matmul: no extra pass over the [B, F] result.
        # A transcoder's b_dec is in output space: its input is not centred by it.
        bias_F = self.encoder_bias() if self.is_transcoder else self.encoder_bias() - self.b_dec @ self.W_enc
        pre_acts = torch.addmm(bias_F, x_BD.reshape(-1, self.d_in), self.W_enc)
        return pre_acts.view(*x_BD.shape[:-1], self.d_sae)

    @abstractmethod
    def activation(self, pre_acts_BF: Tensor) -> Tensor:
        """The architecture's nonlinearity, from pre-activations to the sparse code."""

    def encode(self, x_BD: Tensor) -> Tensor:
        return self.activation(self.pre_activations(x_BD))

    def decode(self, latents_BF: Tensor) -> Tensor:
        return latents_BF @ self.W_dec + self.b_dec

    def forward(self, x_BD: Tensor) -> SAEOutput:
        out = self.code_and_reconstruct(x_BD)
        if self.W_skip is None:
            return out
        skip_BD = x_BD @ self.W_skip.T
        return out._replace(reconstruction_BD=out.reconstruction_BD + skip_BD, skip_BD=skip_BD)

    def code_and_reconstruct(self, x_BD: Tensor) -> SAEOutput:
        """The dictionary's part of the forward pass (everything but a skip path); architectures with a
        fused or custom forward override this."""
        pre_acts_BF = self.pre_activations(x_BD)
        latents_BF = self.activation(pre_acts_BF)
        return SAEOutput(latents_BF, self.decode(latents_BF), pre_acts_BF, firing_counts(latents_BF))

    def learning_rate_scales(self) -> dict[str, float]:
        """Parameters that train at a multiple of `train.lr` (by name); all others at 1x."""
        return {}

    # -- loss terms (each a per-token mean; the loss multiplies in the coefficients) ---------
    def sparsity_loss(self, out: SAEOutput) -> Tensor:
        """The penalty the sparsity coefficient multiplies; zero for hard-budget architectures."""
        return out.latents_BF.new_zeros(())

    def auxiliary_loss(self, x_BD: Tensor, out: SAEOutput, dead_latents_F: Tensor) -> Tensor:
        """Extra training terms with their own fixed weights (AuxK, Gated's aux reconstruction...);
        `x_BD` is what the SAE reconstructs (a transcoder's target output)."""
        return out.latents_BF.new_zeros(())

    # -- decoder-norm maintenance (rows kept at unit norm throughout training) ---------------
    def decoder_norms(self) -> Tensor:
        return self.W_dec.norm(dim=1)

    @torch.no_grad()
    def normalize_decoder(self) -> None:
        self.W_dec /= self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-12)

    @torch.no_grad()
    def remove_gradient_parallel_to_decoder(self) -> None:
        """Project out the radial part of each row's gradient, which renormalising would undo."""
        if self.W_dec.grad is None:
            return
        W_dec_FD = self.W_dec / self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-12)
        parallel_F = (self.W_dec.grad * W_dec_FD).sum(dim=1, keepdim=True)
        self.W_dec.grad -= parallel_F * W_dec_FD

    # -- what sets L0, its checks, fast paths -------------------------------------------------
    @classmethod
    def sparsity_for(cls, sparsity_cfg: DictConfig, total_steps: int, warmup_steps: int) -> Sparsity:
        """What sets L0 in a run of `total_steps` whose coefficient warms up over `warmup_steps`.
        Penalty architectures: `sparsity.coefficient` as given, or with `sparsity.target_l0`
        that coefficient as the start of a controller steering L0 toward the target."""
        if sparsity_cfg.target_l0 is None:
            return FixedCoefficient(sparsity_cfg.coefficient)
        controller = sparsity_cfg.controller
        return CoefficientController(
            initial_coefficient=sparsity_cfg.coefficient,
            target_l0=sparsity_cfg.target_l0,
            adapt_from_step=max(warmup_steps, round(controller.start_fraction * total_steps)),
            freeze_at_step=round((1 - controller.freeze_fraction) * total_steps),
            gain=controller.gain,
            proportional_gain=controller.proportional_gain,
            l0_decay=controller.l0_decay,
            horizon_steps=controller.horizon_steps,
            anti_windup_steps=controller.anti_windup_steps,
        )

    @classmethod
    def check_config(cls, cfg: DictConfig, d_sae: int) -> None:
        """Reject settings this architecture cannot train with (SettingError naming the key),
        before any model or data loads. Penalty architectures: a target in (0, d_sae] and a
        controller that can reach it (a positive starting coefficient)."""
        target = check_target_l0(cfg, d_sae)
        if target is None:
            return
        controller = cfg.sparsity.controller
        check_setting("sparsity.controller.gain", controller.gain, 0, None, strict=True)
        check_setting("sparsity.controller.l0_decay", controller.l0_decay, 0, 1, strict=True)
        check_setting("sparsity.controller.horizon_steps", controller.horizon_steps, 0, None)
        check_setting("sparsity.controller.anti_windup_steps", controller.anti_windup_steps, 0, None)
        check_setting("sparsity.controller.start_fraction", controller.start_fraction, 0, 1)
        check_setting("sparsity.controller.freeze_fraction", controller.freeze_fraction, 0, 1, strict=True)
        if controller.start_fraction + controller.freeze_fraction >= 1:
            raise SettingError(
                f"sparsity.controller.start_fraction={controller.start_fraction} leaves no steps to adapt in "
                f"before sparsity.controller.freeze_fraction={controller.freeze_fraction}"
            )
        if not cfg.sparsity.coefficient > 0:
            raise SettingError(
                f"sparsity.coefficient={cfg.sparsity.coefficient} must be > 0 with sparsity.target_l0 "
                "(the controller starts there and scales it)"
            )

    def enable_fast_path(self, setting: bool | str, device: torch.device) -> bool:
        """Switch to a faster forward with the same function where it pays (`train.performance.sparse_decode`);
        True if it did. Architectures without one keep their forward."""
        return False

    # -- initialisation and export -----------------------------------------------------------
    @torch.no_grad()
    def scale_encoder(self, scale: float) -> None:
        """Start the encoder as `scale` x W_dec^T (`sae_arch.encoder_init_scale`): with scale < 1
        the first steps' pre-activations are small, as in dictionary_learning's recipe (x0.1)."""
        self.W_enc.mul_(scale)

    @torch.no_grad()
    def initialize_decoder_bias(self, sample_ND: Tensor) -> None:
        """Start b_dec at the mean of a sample of what the SAE reconstructs (a transcoder's outputs), so
        that an SAE's encoder sees centred inputs from step one."""
        self.b_dec.copy_(sample_ND.mean(dim=0))

    @torch.no_grad()
    def initialize_from_sample(self, sample_ND: Tensor) -> None:
        """Data-dependent initialisation that belongs to the architecture, on scaled inputs after
        b_dec's (JumpReLU's thresholds with a target); none by default."""

    @torch.no_grad()
    def fold_input_scale(self, input_scale: float, output_scale: float | None = None) -> None:
        """Make an SAE trained on `input_scale * x` take raw x, keeping decoder rows unit norm.

        With positively homogeneous nonlinearities, act(W_enc(s x - b_dec) + b_enc) / s =
        act(W_enc(x - b_dec/s) + b_enc/s): dividing every input-unit parameter by s gives latents
        in raw units and a reconstruction of raw x, with W_enc and W_dec unchanged.
        A transcoder trained to map s_in x to s_out y: dividing its output by s_out gives
        act(W_enc (s_in/s_out) x + b_enc/s_out) for the latents, so W_enc (and W_skip) take the factor
        s_in/s_out and the output-unit parameters are divided by s_out.
        """
        output_scale = input_scale if output_scale is None else output_scale
        for name in self.activation_unit_params:
            getattr(self, name).div_(output_scale)
        if output_scale != input_scale:
            self.W_enc.mul_(input_scale / output_scale)
        if self.W_skip is not None:
            self.W_skip.mul_(input_scale / output_scale)

    def init_kwargs(self) -> dict[str, Any]:
        """Constructor arguments that rebuild this SAE (saved in cfg.json for `load_sae`)."""
        return self.shape_kwargs()

    def shape_kwargs(self) -> dict[str, Any]:
        """d_in and d_sae, and a transcoder's d_out and skip: what another architecture needs to take
        this one's shape (BatchTopK's JumpReLU inference form)."""
        io = {"d_out": self.d_out, "skip": self.W_skip is not None} if self.is_transcoder else {}
        return {"d_in": self.d_in, "d_sae": self.d_sae} | io

    def saelens_cfg_extras(self) -> dict[str, Any]:
        """Architecture-specific cfg.json fields SAELens reads (e.g. `k` for TopK)."""
        return {}

    def inference_form(self) -> SparseAutoencoder:
        """The SAE as it is saved and evaluated; BatchTopK, for one, becomes a JumpReLU SAE."""
        return copy.deepcopy(self)

    def extra_repr(self) -> str:
        io = f", d_out={self.d_out}, skip={self.W_skip is not None}" if self.is_transcoder else ""
        return f"d_in={self.d_in}, d_sae={self.d_sae}{io}"


def check_setting(key: str, value: object, low: float, high: float | None, strict: bool = False) -> None:
    """`value` is a number in [low, high] ((low, high) when `strict`; no upper end when high is None)."""
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if strict:
        ok = is_number and low < value and (high is None or value < high)  # type: ignore[operator]
    else:
        ok = is_number and low <= value and (high is None or value <= high)  # type: ignore[operator]
    if not ok:
        brackets = "()" if strict else "[]"
        end = "inf" if high is None else f"{high:g}"
        raise SettingError(f"{key}={value} must be a number in {brackets[0]}{low:g}, {end}{brackets[1]}")


def check_target_l0(cfg: DictConfig, d_sae: int) -> float | None:
    """`sparsity.target_l0`: None, or a number in (0, d_sae]."""
    target = cfg.sparsity.get("target_l0")
    if target is not None and (not isinstance(target, (int, float)) or isinstance(target, bool) or not 0 < target <= d_sae):
        raise SettingError(f"sparsity.target_l0={target} must be a number in (0, d_sae={d_sae}]")
    return target


def instantiate_sae(
    cfg: DictConfig, d_in: int, d_sae: int, total_steps: int, warmup_steps: int, d_out: int | None = None, skip: bool = False
) -> SparseAutoencoder:
    """The run's SAE (a transcoder with `d_out`, a skip transcoder with `skip` too) at its initialisation,
    with what sets its L0 (`sae.sparsity`) from `cfg.sparsity`."""
    import hydra.utils

    architecture: type[SparseAutoencoder] = hydra.utils.get_class(cfg.sae_arch.module._target_)
    sparsity = architecture.sparsity_for(cfg.sparsity, total_steps, warmup_steps)
    shape = {"d_out": d_out, "skip": skip} if d_out is not None else {}
    sae: SparseAutoencoder = hydra.utils.instantiate(cfg.sae_arch.module, d_in=d_in, d_sae=d_sae, **shape, **sparsity.sae_arguments())
    sae.sparsity = sparsity
    return sae
