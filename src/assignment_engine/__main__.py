"""``python -m assignment_engine``: the command line (needs the ``cli`` extra)."""

from .cli import run

run()
