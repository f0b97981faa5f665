"""Every use of redis-py internals, in one place, imported only when a Redis Cluster store is built.

promptcache uses two things redis-py does not promise to keep: the cluster client's command parser class
(``redis._parsers.commands.AsyncCommandsParser``, replaced by a table that never re-fetches COMMAND) and
its "topology is stale" flag (the ``_initialize`` attribute of ``RedisCluster``). When a redis-py release
moves the first, importing this module raises a :class:`~promptcache.exceptions.ConfigError` naming the
installed redis-py version; ``import promptcache`` and every other store are unaffected. A renamed flag
only means the store stops refreshing the topology ahead of redis-py (it still reads it inline).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

import redis
from redis.utils import str_if_bytes

from promptcache.exceptions import ConfigError

try:
    from redis._parsers.commands import AsyncCommandsParser
except ImportError as exc:  # pragma: no cover - only with a redis-py that moved its parsers
    raise ConfigError(
        f"redis-py {redis.__version__} has no redis._parsers.commands.AsyncCommandsParser, which the Redis "
        "Cluster store relies on; install a redis-py version promptcache supports (see its pyproject.toml)"
    ) from exc

if TYPE_CHECKING:
    from redis.asyncio.cluster import ClusterNode, RedisCluster

__all__ = ["TOPOLOGY_STALE_FLAG", "LazyCommandTable", "install_lazy_command_table"]

TOPOLOGY_STALE_FLAG: Final = "_initialize"
"""redis-py's flag for "topology unknown or stale; re-read it before the next command" (RedisCluster)."""

# Where the keys of the commands this store sends are (COMMAND's arity, flags, first/last key, step);
# fixed since Redis 2.x. Routing them never needs a COMMAND round trip.
_KEY_POSITIONS: Final[dict[str, tuple[int, list[str], int, int, int]]] = {
    "get": (2, ["readonly", "fast"], 1, 1, 1),
    "set": (-3, ["write", "denyoom"], 1, 1, 1),
    "del": (-2, ["write"], 1, -1, 1),
    "unlink": (-2, ["write", "fast"], 1, -1, 1),
}
_COMMAND_INFO_FIELDS: Final = 6  # name, arity, flags, first key, last key, step


def _command_entry(raw: list[Any]) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": str_if_bytes(raw[0]).lower(),
        "arity": int(raw[1]),
        "flags": [str_if_bytes(flag) for flag in raw[2]],
        "first_key_pos": int(raw[3]),
        "last_key_pos": int(raw[4]),
        "step_count": int(raw[5]),
    }
    if len(raw) > 9:  # Redis >= 7: subcommands are the 10th field
        entry["subcommands"] = raw[9]
    return entry


class LazyCommandTable(AsyncCommandsParser):
    """redis-py's key-position table, learnt one command at a time instead of with COMMAND.

    redis-py fetches the whole COMMAND table on the first call and again after every connection error
    (with retries off: on the next call): a ~250-entry reply whose pure-Python parse takes 25-40 ms of
    event-loop time, most of a 50 ms deadline, at start-up and during exactly the failover the refresh is
    for. The store's own commands are known up front; any other command a shared client sends is looked
    up once with ``COMMAND INFO <name>``.
    """

    __slots__ = ()

    def __init__(self) -> None:
        super().__init__()
        for name, (arity, flags, first, last, step) in _KEY_POSITIONS.items():
            self.commands[name] = _command_entry([name, arity, flags, first, last, step])

    async def initialize(self, node: ClusterNode | None = None) -> None:
        if node is not None:
            self.node = node

    async def get_keys(self, *args: Any) -> tuple[str, ...] | None:  # noqa: ANN401 - redis-py's signature
        if len(args) >= 2 and isinstance(args[0], str):  # a command and at least one argument
            name = args[0].lower().split()[0]
            if name not in self.commands:
                for raw in await self.node.execute_command("COMMAND INFO", name) or []:
                    if raw and len(raw) >= _COMMAND_INFO_FIELDS:
                        entry = _command_entry(raw)
                        self.commands[entry["name"]] = entry
        return await super().get_keys(*args)


def install_lazy_command_table(client: RedisCluster) -> None:
    """Give ``client`` a :class:`LazyCommandTable` unless it already has a customised parser."""
    if type(getattr(client, "commands_parser", None)) is AsyncCommandsParser:  # not a customised one
        parser = LazyCommandTable()
        parser.commands.update(client.commands_parser.commands)
        client.commands_parser = parser
