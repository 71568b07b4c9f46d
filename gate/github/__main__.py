"""`python -m gate.github ...`: the step action.yml runs after the gate (see gate/github/__init__.py)."""

from gate.github import main

raise SystemExit(main())
