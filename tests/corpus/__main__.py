"""``python -m tests.corpus``: run the issue #14 corpus and print ``wrong hits W, false misses F of N``.

Lists every failing pair by name; exits 1 when any pair fails. ``-k TEXT`` runs the pairs whose name
contains TEXT; ``-v`` prints every pair's result.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, where fake_llm and corpus live

from corpus.pairs import all_pairs
from corpus.runner import run_corpus


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.corpus", description=__doc__)
    parser.add_argument("-k", default="", help="only the pairs whose name contains this")
    parser.add_argument("-v", action="store_true", help="print every pair's result")
    args = parser.parse_args()
    report = run_corpus(p for p in all_pairs() if args.k in p.name)
    if args.v:
        for outcome in report.outcomes:
            state = {None: "ERROR", True: "hit", False: "miss"}[outcome.hit]
            print(f"{state:5} {outcome.pair.expect.value:11} {outcome.pair.name}")  # noqa: T201
    print(report.text())  # noqa: T201
    failed = report.wrong_hits or report.false_misses or report.errors
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
