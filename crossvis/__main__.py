"""``python -m crossvis`` is the ``crossvis`` command."""
from crossvis.cli import entry

entry()
