"""The ``bridgehead`` command line."""
