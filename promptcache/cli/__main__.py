"""``python -m promptcache.cli``: the ``promptcache`` command without its console script."""

from __future__ import annotations

import sys

from promptcache.cli import main

sys.exit(main())
