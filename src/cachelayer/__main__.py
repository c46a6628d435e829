"""``python -m cachelayer``: the same as the ``cachelayer`` command."""

from cachelayer.cli import run

run()
