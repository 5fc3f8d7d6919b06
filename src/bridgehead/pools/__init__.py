"""Elastic pools: providers that start and stop nodes (``sim`` here; Slurm power saving,
Spark workers, EMR instance groups and the local pool behind the same interface), and the
discrete-event simulation that drives the real planner on a fake clock."""
