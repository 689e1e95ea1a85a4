"""Steering: `python -m analysis.steer RUN_DIR --latent I --alpha A` generates text from the LM with
alpha times a latent's decoder direction added to the activation at the SAE's hook, at every
position, next to the unsteered generation from the same seed.

alpha is in units of the typical activation norm at the hook (the median ||x|| over ordinary
tokens of the run's scale sample), so one value means the same strength at any layer or model:
the added vector is alpha * median||x|| * W_dec[i] / ||W_dec[i]||. Both generations draw their
samples from one seeded generator, so they differ only through the steering.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from sae_sweeps.loaded_run import LoadedRun, finished_run_summary, load_run
from sae_sweeps.models import HookPoint

DEFAULT_ALPHA = 0.3
DEFAULT_PROMPT = "In the news today,"
DEFAULT_NEW_TOKENS = 40
DEFAULT_TEMPERATURE = 0.7


class SteeringError(ValueError):
    """A bad argument to steering, named in one line."""


@dataclass
class SteeringResult:
    """One steered generation beside its unsteered twin."""

    prompt: str
    """The prompt both continue."""
    latent: int
    """The latent whose decoder direction was added."""
    alpha: float
    """Its strength, in units of the median activation norm at the hook."""
    added_norm: float
    """||the added vector||, in the activation's own units."""
    steered: str
    """The continuation with the direction added."""
    unsteered: str
    """The continuation from the same seed without it."""


def median_activation_norm(run: LoadedRun) -> float:
    """The typical ||x|| at the hook the SAE writes (a transcoder's output hook): the unit alpha is measured in."""
    return float(run.data.sample_activations(HookPoint.parse(run.hook.writes)).norm(dim=-1).median())


def steering_vector(run: LoadedRun, latent: int, alpha: float) -> Tensor:
    """alpha * median||x|| * the latent's unit decoder direction."""
    direction_D = run.sae.W_dec[latent].detach().float()
    return alpha * median_activation_norm(run) * direction_D / direction_D.norm()


@torch.no_grad()
def generate(run: LoadedRun, prompt: str, vector_D: Tensor | None, new_tokens: int, temperature: float, seed: int) -> str:
    """Sample `new_tokens` tokens after `prompt`, adding `vector_D` at the hook at every position
    (None: the plain LM). Temperature 0 is greedy decoding."""
    model = run.model
    tokens = [model.bos_token_id, *model.tokenizer.encode(prompt, add_special_tokens=False)]
    prompt_length = len(tokens)
    generator = torch.Generator().manual_seed(seed)
    hooks = [] if vector_D is None else [(run.hook.writes, lambda act, hook: act + vector_D.to(act.device, act.dtype))]
    for _ in range(new_tokens):
        tokens_1T = torch.tensor([tokens], device=model.device)
        logits_V = model.bridge.run_with_hooks(tokens_1T, fwd_hooks=hooks)[0, -1].float().cpu()
        tokens.append(next_token(logits_V, temperature, generator))
        if tokens[-1] == model.eos_token_id:
            break
    return model.tokenizer.decode(tokens[prompt_length:], skip_special_tokens=True)


def next_token(logits_V: Tensor, temperature: float, generator: torch.Generator) -> int:
    if temperature == 0:
        return int(logits_V.argmax())
    probabilities_V = torch.softmax(logits_V / temperature, dim=-1)
    return int(torch.multinomial(probabilities_V, 1, generator=generator))


def check_arguments(latent: int, d_sae: int, new_tokens: int, temperature: float) -> None:
    if not 0 <= latent < d_sae:
        raise SteeringError(f"--latent {latent}: not a latent of this SAE (0..{d_sae - 1})")
    if new_tokens < 1:
        raise SteeringError(f"--new-tokens {new_tokens}: must be at least 1")
    if temperature < 0:
        raise SteeringError(f"--temperature {temperature}: must be >= 0")


def steer(
    run_dir: str,
    latent: int,
    alpha: float = DEFAULT_ALPHA,
    prompt: str = DEFAULT_PROMPT,
    new_tokens: int = DEFAULT_NEW_TOKENS,
    temperature: float = DEFAULT_TEMPERATURE,
    seed: int = 0,
    run: LoadedRun | None = None,
) -> SteeringResult:
    """Generate from `prompt` with and without latent `latent` steered at `alpha`. Pass `run`
    (from `load_run`) to steer many times without reloading the LM."""
    check_arguments(latent, finished_run_summary(run_dir)["d_sae"], new_tokens, temperature)
    run = run if run is not None else load_run(run_dir)
    vector_D = steering_vector(run, latent, alpha)
    return SteeringResult(
        prompt=prompt,
        latent=latent,
        alpha=alpha,
        added_norm=float(vector_D.norm()),
        steered=generate(run, prompt, vector_D, new_tokens, temperature, seed),
        unsteered=generate(run, prompt, None, new_tokens, temperature, seed),
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m analysis.steer", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", help="a finished run directory (holds summary.json and sae/)")
    parser.add_argument("--latent", type=int, required=True, help="the latent whose decoder direction is added")
    parser.add_argument("--alpha", type=float, default=DEFAULT_ALPHA,
                        help=f"strength in units of the median activation norm at the hook (default {DEFAULT_ALPHA})")
    parser.add_argument("--prompt", default=DEFAULT_PROMPT, help=f"default {DEFAULT_PROMPT!r}")
    parser.add_argument("--new-tokens", type=int, default=DEFAULT_NEW_TOKENS, help=f"default {DEFAULT_NEW_TOKENS}")
    parser.add_argument("--temperature", type=float, default=DEFAULT_TEMPERATURE,
                        help=f"sampling temperature, 0 for greedy (default {DEFAULT_TEMPERATURE})")
    parser.add_argument("--seed", type=int, default=0, help="seed of both generations (default 0)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        result = steer(args.run_dir, args.latent, args.alpha, args.prompt, args.new_tokens, args.temperature, args.seed)
    except (SteeringError, FileNotFoundError) as error:
        print(f"error: {error}")
        return 2
    print(f"latent {result.latent}, alpha {result.alpha} (added norm {result.added_norm:.3g})")
    print(f"prompt:    {result.prompt}")
    print(f"steered:   {result.steered}")
    print(f"unsteered: {result.unsteered}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
