"""Lightning training of SAEs: the module, its schedules and callbacks."""
