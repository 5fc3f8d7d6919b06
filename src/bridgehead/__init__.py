"""Bridgehead: a compute broker between workflow orchestrators and HPC clusters."""

__version__ = "0.1.0"
