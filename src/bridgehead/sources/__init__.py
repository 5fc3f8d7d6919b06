"""Event sources: things outside Bridgehead that post events to its log (``POST /v1/events``)
for rules to act on. ``watch``: files landing in directories, as ``file.created``."""

from bridgehead.sources.watch import DirectoryWatcher, WatchSettings, run_watch

__all__ = ["DirectoryWatcher", "WatchSettings", "run_watch"]
