"""The public door: one sorted ``__all__`` that matches what the package exposes, and no hard extras."""

from __future__ import annotations

import subprocess
import sys
import types

import promptcache


def test_all_is_sorted_and_unique() -> None:
    """``__all__`` is sorted and lists every name once."""
    assert list(promptcache.__all__) == sorted(set(promptcache.__all__))


def test_all_matches_public_names() -> None:
    """Every public, non-module attribute is in ``__all__`` and every ``__all__`` name exists."""
    public = {
        name
        for name, value in vars(promptcache).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType) and name != "annotations"
    }
    assert public == set(promptcache.__all__)


def test_public_objects_come_from_private_modules_or_exceptions() -> None:
    """Re-exported classes live in private modules (or the documented exceptions module)."""
    for name in promptcache.__all__:
        module = getattr(getattr(promptcache, name), "__module__", "promptcache")
        last = module.rsplit(".", 1)[-1]
        assert last.startswith("_") or last in {"exceptions", "agent"}, (name, module)


def test_core_imports_without_optional_extras() -> None:
    """``import promptcache`` works with openai, anthropic, httpx and prometheus_client all missing."""
    code = (
        "import sys\n"
        "for m in ('openai', 'anthropic', 'prometheus_client', 'httpx', 'httpx2'):\n"
        "    sys.modules[m] = None\n"
        "import promptcache, promptcache.pytest_plugin\n"
        "print(promptcache.PromptCache.__name__)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "PromptCache"


def test_sdk_module_names_its_extra_when_the_sdk_is_missing() -> None:
    """``promptcache.openai`` without the SDK fails with an ImportError naming the extra to install."""
    code = "import sys\nsys.modules['openai'] = None\nimport promptcache.openai\n"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode != 0
    assert "pip install 'promptcache[openai]'" in out.stderr
