"""``python -m wildswarm``: the same as the ``wildswarm`` command."""
from wildswarm.cli import main

main(prog_name="wildswarm")
