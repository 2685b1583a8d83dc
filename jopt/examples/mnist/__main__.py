"""``python -m jopt.examples.mnist``: the ``jopt-mnist`` command line."""

from jopt.examples.mnist.cli import main

raise SystemExit(main())
