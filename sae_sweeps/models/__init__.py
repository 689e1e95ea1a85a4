"""Frozen language models and the hook points SAEs attach to."""

from sae_sweeps.models.hook_point import HookError, HookPoint

__all__ = ["HookError", "HookPoint", "LanguageModel"]


def __getattr__(name: str):
    # The LM wrapper pulls in torch and transformer_lens; hook names are needed long before
    # (config checks, --help), so it is imported on first use.
    if name == "LanguageModel":
        from sae_sweeps.models.language_model import LanguageModel

        return LanguageModel
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
