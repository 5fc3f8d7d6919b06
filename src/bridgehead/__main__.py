"""``python -m bridgehead``: the ``bridgehead`` command."""

from bridgehead.cli.entry import main

main()
