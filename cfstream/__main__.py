"""``python -m cfstream``: the same as the ``cfstream`` command."""

from cfstream.cli import main

raise SystemExit(main())
