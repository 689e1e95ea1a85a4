"""sae_sweeps: Hydra-configured sweeps that train and compare sparse autoencoders on LM activations."""

from sae_sweeps.config_resolvers import register_resolvers

register_resolvers()
