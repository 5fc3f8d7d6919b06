"""Scheduler backends behind one protocol (:mod:`bridgehead.backends.base`)."""
