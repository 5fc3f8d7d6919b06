"""Demo content shipped with Bridgehead: the crystallography workflow of the README."""
