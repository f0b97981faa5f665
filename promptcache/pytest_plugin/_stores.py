"""Where cassettes live: a folder of YAML files (one per test) or a Redis server shared by CI runners.

Both hold the same cassette document; the folder store writes atomically under an exclusive lock on the
folder, so parallel pytest-xdist workers never lose or interleave recordings, even in a shared cassette.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import os
import re
import secrets
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol
from urllib.parse import urlsplit

from filelock import FileLock

from promptcache._cassette import (
    allowed_secrets,
    dump_cassette,
    find_secret,
    load_cassette,
    parse_cassette,
    refusal,
)
from promptcache._stores import redact_url
from promptcache.exceptions import ConfigError, SecretLeakError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

__all__ = [
    "CassetteStore",
    "DirectoryStore",
    "RedisCassetteStore",
    "cassette_name",
    "default_redis_prefix",
    "open_cassette_store",
]

_UNSAFE: Final = re.compile(r"[^A-Za-z0-9_.\-\[\]]+")
REDIS_PREFIX: Final = "promptcache:cassette:"  # followed by the project's name (default_redis_prefix)


def default_redis_prefix(rootdir: Path) -> str:
    """``promptcache:cassette:<rootdir name>:``: two projects sharing one Redis keep apart by default."""
    return f"{REDIS_PREFIX}{_UNSAFE.sub('_', rootdir.name) or '_'}:"


def cassette_name(nodeid: str) -> str:
    """A file-system-safe cassette name for a test id.

    ``tests/test_a.py::TestX::test_y[p]`` becomes ``tests/test_a/TestX.test_y[p]``.
    """
    path, _, rest = nodeid.partition("::")
    path = path.removesuffix(".py")
    parts = [_UNSAFE.sub("_", p) or "_" for p in path.split("/") if p not in {"", ".", ".."}]
    test = _UNSAFE.sub("_", rest.replace("::", ".")) or "module"
    return "/".join([*parts, test[:150]])


class CassetteStore(Protocol):
    """Load a cassette document by name, or update one under an exclusive lock."""

    def load(self, name: str) -> dict[str, Any] | None: ...

    def update(self, name: str, change: Callable[[dict[str, Any] | None], dict[str, Any] | None]) -> None:
        """Re-read ``name`` under a lock, apply ``change`` and write the result (None deletes it)."""
        ...

    def names(self) -> list[str]: ...

    def describe(self, name: str) -> str: ...

    def check(self) -> None:
        """Raise ConfigError, naming the store, when it cannot be used at all (unreachable server)."""
        ...


class DirectoryStore:
    """Cassettes as ``<root>/<name>.yaml`` files."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        # Parsed cassettes by path, valid while the file's size and mtime are unchanged: a cassette shared
        # by many tests (or reloaded by a prune) is parsed once, not once per test.
        self._parsed: dict[Path, tuple[int, int, dict[str, Any] | None]] = {}

    def path(self, name: str) -> Path:
        return self.root / f"{name}.yaml"

    def describe(self, name: str) -> str:
        return str(self.path(name))

    def check(self) -> None:
        """A folder is created on first write; nothing to check up front."""

    def load(self, name: str) -> dict[str, Any] | None:
        path = self.path(name)
        try:
            stat = path.stat()
        except FileNotFoundError:
            return None
        cached = self._parsed.get(path)
        if cached is not None and cached[:2] == (stat.st_mtime_ns, stat.st_size):
            return copy.deepcopy(cached[2])  # callers may change what they get; the cache must not
        doc = load_cassette(path)
        self._parsed[path] = (stat.st_mtime_ns, stat.st_size, copy.deepcopy(doc))
        return doc

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        # One writer at a time across xdist workers. filelock, not fcntl: fcntl does not exist on Windows,
        # and this module is imported by every pytest run once promptcache is installed. The lock file
        # lives in the temp folder, named after the cassette folder, so the cassette folder holds only
        # cassettes (a lock file there would show up in every project's fixtures).
        with FileLock(_lock_path(self.root)):
            yield

    def update(self, name: str, change: Callable[[dict[str, Any] | None], dict[str, Any] | None]) -> None:
        with self._locked():
            self._parsed.pop(self.path(name), None)  # re-read under the lock: another worker may have written
            new = change(self.load(name))
            self._parsed.pop(self.path(name), None)
            if new is None:
                self.path(name).unlink(missing_ok=True)
            else:
                _write(self.path(name), new)

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(str(p.relative_to(self.root).with_suffix("")) for p in self.root.rglob("*.yaml"))


def _write(path: Path, doc: dict[str, Any]) -> None:
    """Write ``doc`` atomically (temp file + rename), refusing text in which a credential survived.

    A new file gets the mode any new file gets under the process umask (0644 under umask 022), an
    existing one keeps its mode: ``tempfile.mkstemp``'s 0600 would make cassettes unreadable to a CI
    cache, a container user or a teammate's checkout.
    """
    text = dump_cassette(doc)
    leaked = find_secret(text, allowed_secrets(doc))
    if leaked is not None:
        raise SecretLeakError(refusal(str(path), leaked))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the kernel applies the umask
    try:
        with contextlib.suppress(FileNotFoundError):
            os.fchmod(fd, path.stat().st_mode & 0o7777)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        tmp.replace(path)  # atomic on POSIX: readers see the old file or the new one, never half
    except BaseException:
        with contextlib.suppress(OSError):  # cleanup only; the original error is what matters
            tmp.unlink()
        raise


def _lock_path(root: Path) -> Path:
    digest = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"promptcache-cassettes-{digest}.lock"


class RedisCassetteStore:
    """Cassettes in Redis, one string per cassette under ``<prefix><name>``, as YAML text.

    The prefix defaults to ``promptcache:cassette:<rootdir name>:`` (:func:`default_redis_prefix`), so
    two projects sharing one Redis do not overwrite each other; branches of one project set their own
    (``--promptcache-redis-prefix``).
    """

    def __init__(self, url: str, prefix: str = REDIS_PREFIX) -> None:
        import redis  # noqa: PLC0415 - only this store needs the sync client

        self._label = redact_url(url)
        self._password = urlsplit(url).password
        self.prefix = prefix
        self.client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)

    def describe(self, name: str) -> str:
        return f"{self._label} key {self.prefix}{name}"

    def check(self) -> None:
        """Raise ConfigError naming the (redacted) URL when the server cannot be reached."""
        try:
            self.client.ping()
        except Exception as exc:  # noqa: BLE001 - any failure means the same to the user: unusable
            reason = str(exc).replace(self._password, "***") if self._password else str(exc)
            raise ConfigError(
                f"the promptcache cassette store {self._label} cannot be reached "
                f"({type(exc).__name__}: {reason}); start it, or use a folder "
                "(--promptcache-store=fixtures/cassettes)"
            ) from None

    def load(self, name: str) -> dict[str, Any] | None:
        raw = self.client.get(self.prefix + name)
        if raw is None:
            return None
        return parse_cassette(raw if isinstance(raw, bytes) else str(raw).encode(), self.describe(name))

    def update(self, name: str, change: Callable[[dict[str, Any] | None], dict[str, Any] | None]) -> None:
        key = self.prefix + name
        with self.client.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(key)  # type: ignore[no-untyped-call]  # optimistic lock: retried if another runner writes in between
                    raw = pipe.get(key)
                    current = None if raw is None else parse_cassette(raw, self.describe(name))
                    new = change(current)
                    pipe.multi()
                    if new is None:
                        pipe.delete(key)
                    else:
                        text = dump_cassette(new)
                        leaked = find_secret(text, allowed_secrets(new))
                        if leaked is not None:
                            raise SecretLeakError(refusal(self.describe(name), leaked))
                        pipe.set(key, text.encode("utf-8"))
                    pipe.execute()
                except redis_watch_error():
                    continue
                return

    def names(self) -> list[str]:
        pattern = re.sub(r"([*?\[\]\\])", r"\\\1", self.prefix) + "*"  # the prefix matched literally
        found = self.client.scan_iter(match=pattern, count=1000)
        return sorted(k.decode()[len(self.prefix) :] for k in found)


def redis_watch_error() -> type[Exception]:
    from redis.exceptions import WatchError  # noqa: PLC0415

    return WatchError


def open_cassette_store(spec: str, rootdir: Path, redis_prefix: str | None = None) -> CassetteStore:
    """A folder path (relative to the pytest rootdir) or a ``redis://`` / ``rediss://`` URL.

    Raises:
        ConfigError: An unsupported URL scheme.
    """
    if spec.startswith(("redis://", "rediss://", "unix://")):
        return RedisCassetteStore(spec, redis_prefix or default_redis_prefix(rootdir))
    if "://" in spec:
        raise ConfigError(f"--promptcache-store takes a folder or a redis:// URL, got {redact_url(spec)!r}")
    path = Path(spec)
    return DirectoryStore(path if path.is_absolute() else rootdir / path)
