"""Runnable agent examples (a package only so that the example tests in tests/examples import them)."""
