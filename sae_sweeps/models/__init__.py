"""Frozen language models and the hook points SAEs attach to."""

from sae_sweeps.models.hook_point import HookError, HookPoint
from sae_sweeps.models.language_model import LanguageModel

__all__ = ["HookError", "HookPoint", "LanguageModel"]
