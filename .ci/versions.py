"""The version sets `make matrix` proves, read from pyproject.toml so the claim and the test never drift.

python .ci/versions.py oldest   constraints pinning every runtime dependency and SDK extra to its
                                lower bound (``openai>=1.40`` becomes ``openai==1.40``)
python .ci/versions.py newest   no constraints: the resolver takes the newest releases
python .ci/versions.py report   the versions installed in the running interpreter
"""

from __future__ import annotations

import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

# The extras whose lower bounds are claims to users; dev/bench are our tools, not claims.
CLAIMED_EXTRAS = ("openai", "anthropic", "prometheus")
REPORTED = (
    "openai",
    "anthropic",
    "httpx",
    "httpx2",
    "redis",
    "pyyaml",
    "orjson",
    "prometheus-client",
    "langchain-core",  # the frameworks: matrix-newest only (see the Makefile)
    "langchain-openai",
    "langchain-anthropic",
    "pydantic-ai-slim",
    "openai-agents",
    "genai-prices",
)
_LOWER = re.compile(r"^\s*([A-Za-z0-9._-]+)(?:\[[^\]]*\])?\s*>=\s*([0-9][^,;\s]*)")


def claimed_requirements() -> list[str]:
    project = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())["project"]
    requirements = list(project["dependencies"])
    for extra in CLAIMED_EXTRAS:
        requirements += project["optional-dependencies"][extra]
    return requirements


def oldest() -> list[str]:
    pins = []
    for requirement in claimed_requirements():
        match = _LOWER.match(requirement)
        if match is None:
            raise SystemExit(f"no '>=' lower bound to test in {requirement!r}: every claim needs one")
        pins.append(f"{match[1]}=={match[2]}")
    return pins


def report() -> None:
    found = []
    for name in REPORTED:
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            found.append(f"{name} -")
    print("versions under test:", ", ".join(found))


def main() -> None:
    command = sys.argv[1] if len(sys.argv) > 1 else ""
    if command == "oldest":
        print("\n".join(oldest()))
    elif command == "newest":
        print("# newest: no constraints")
    elif command == "report":
        report()
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
