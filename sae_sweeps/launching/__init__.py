"""Launching sweeps: the SLURM launcher that always comes back, and what a SLURM job runs first."""
