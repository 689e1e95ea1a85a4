"""sae_sweeps: Hydra-configured sweeps that train and compare sparse autoencoders on LM activations."""

from sae_sweeps.sweeps import register_resolvers

# Config interpolations such as ${gpus_per_node:...} must resolve in every process that reads a
# config, including SLURM jobs that unpickle the task without running launch.py.
register_resolvers()
