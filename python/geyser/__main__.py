"""``python -m geyser``: the ``geyser`` command (``geyser.cli``)."""

from geyser.cli import main

main(prog_name="geyser")
