"""The framework recipes (``examples/with_*.py``) run against a live local FakeLLM here."""

from __future__ import annotations

import sys
from pathlib import Path

# `examples/` is not installed: put the repository root on sys.path so `examples.with_*` import.
ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
