"""``promptcache demo``: one agent workload run twice, without and with the cache, measured both times.

:mod:`._workload` draws the calls, :mod:`._run` sends them (to a simulated or a real upstream) and measures
both runs, :mod:`._report` renders the results table, and :mod:`._cli` registers the command and prints.
The demo is built on the CLI: it shows the same stats table as ``promptcache stats``
(:mod:`promptcache.cli._stats`).
"""
