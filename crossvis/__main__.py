"""``python -m crossvis`` is the ``crossvis`` command."""
from crossvis.cli import main

raise SystemExit(main())
