"""Entry point for `python -m sendworx`.

Delegates to the command line so tests can run the exact code operators run.
"""

from sendworx.cli.main import main

raise SystemExit(main())
