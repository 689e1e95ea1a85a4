"""sae_sweeps' SLURM launcher where Hydra accepts launchers: in the hydra_plugins namespace (this
folder is a namespace portion because launch.py runs from the repository root). The code is in
sae_sweeps/launching/slurm.py."""

from typing import Any

from sae_sweeps.launching import slurm


class ResilientSlurmLauncher(slurm.ResilientSlurmLauncher):
    """The launcher that conf/hydra/launcher/submitit_slurm.yaml names."""

    def __reduce__(self) -> tuple[Any, ...]:
        # SLURM jobs unpickle the launcher without the repository root on sys.path: they get the
        # implementation, importable wherever sae_sweeps is installed.
        return slurm.rebuilt_launcher, (self.__dict__,)
