"""``python -m eventtally``: the same command line as the ``eventtally`` script (see ``cli``)."""

from eventtally.cli import main

raise SystemExit(main())
