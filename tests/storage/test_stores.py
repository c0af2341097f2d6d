"""The Redis client the stores use: what it sends is what redis-py would send."""

from __future__ import annotations

import ast
import re
from importlib.resources import files
from typing import Any

import pytest
from redis.asyncio.connection import Connection, UnixDomainSocketConnection
from redis.exceptions import DataError

from callguard.storage.connection import connect, hiredis_packing
from callguard.storage.factory import open_stores
from callguard.storage.keys import CALLEE_FIELDS, PREFIX
from callguard.storage.scripts import fragment

COMMANDS: list[tuple[Any, ...]] = [
    ("PING",),
    ("CONFIG GET", "maxmemory"),  # a command name of two words
    ("EVALSHA", "a" * 40, 2, "cg:reg:{+39347123}", "cg:n:{+393471234567}", "4567", "acme", 1.5, b"\x00\xff"),
    ("SET", "k", bytearray(b"v"), memoryview(b"w")),
    ("HSET", "k", "città", "€"),  # UTF-8, as redis-py's encoder writes it
    ("EVALSHA", "b" * 40, 0, *(f"arg-{i}" for i in range(5000))),  # a long batch command
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: str(c[0]))
def test_hiredis_packing_sends_the_bytes_redis_py_would(command: tuple[Any, ...]) -> None:
    plain, fast = Connection(), hiredis_packing(Connection)()
    assert b"".join(fast.pack_command(*command)) == b"".join(plain.pack_command(*command))


def test_hiredis_packing_refuses_what_redis_py_refuses() -> None:
    with pytest.raises(DataError):
        Connection().pack_command("SET", "k", None)
    with pytest.raises(DataError):
        hiredis_packing(Connection)().pack_command("SET", "k", None)


def test_stores_keep_the_connection_kind_of_their_url() -> None:
    tcp = open_stores("redis://127.0.0.1:1/0")
    unix = open_stores("unix:///tmp/no-such-redis.sock?db=0")
    assert issubclass(tcp.redis.connection_pool.connection_class, Connection)
    assert issubclass(unix.redis.connection_pool.connection_class, UnixDomainSocketConnection)
    for stores in (tcp, unix):
        assert stores.redis.connection_pool.connection_class.__name__.startswith("HiredisPacking")
        assert stores.raw.connection_pool.connection_class is stores.redis.connection_pool.connection_class


@pytest.mark.parametrize(
    "url", ["redis://127.0.0.1:1/0", "redis+cluster://127.0.0.1:1", "rediss+cluster://u:p@127.0.0.1:1,127.0.0.1:2"]
)
@pytest.mark.parametrize("decode", [True, False])
def test_every_client_connect_builds_packs_with_hiredis(url: str, decode: bool) -> None:
    client = connect(url, timeout=1.0, decode_responses=decode)
    if url.startswith("redis://"):
        classes = [client.connection_pool.connection_class]
    else:  # a cluster: the nodes it starts from and those its slot map will name
        classes = [client.nodes_manager.connection_kwargs["connection_class"]]
        classes += [node.connection_class for node in client.nodes_manager.startup_nodes.values()]
    assert classes and all(c.__name__.startswith("HiredisPacking") for c in classes)


async def test_stores_answer_through_the_hiredis_packing_connection(embedded: Any) -> None:
    stores = open_stores(embedded.redis_url)
    try:
        assert await stores.ping()
    finally:
        await stores.close()


def test_no_lua_script_names_a_key_of_its_own() -> None:
    """Keys come from callguard.storage.keys, as KEYS or a prefix in ARGV."""
    lua = files("callguard.storage").joinpath("lua")
    texts = {entry.name: entry.read_text(encoding="utf-8") for entry in lua.iterdir() if entry.name.endswith(".lua")}
    assert texts and not [name for name, text in texts.items() if PREFIX in text]


def test_the_storage_modules_import_each_other_without_a_cycle() -> None:
    """Imports inside functions count too: they hid a cycle stores -> register -> cluster -> stores."""
    package = files("callguard.storage")
    graph: dict[str, set[str]] = {}
    for entry in package.iterdir():
        if not entry.name.endswith(".py"):
            continue
        tree = ast.parse(entry.read_text(encoding="utf-8"))
        found = graph.setdefault(entry.name.removesuffix(".py"), set())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == "callguard.storage":
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("callguard.storage."):
                found.add(str(node.module).split(".")[2])
    done: set[str] = set()

    def visit(module: str, path: tuple[str, ...]) -> None:
        assert module not in path, " -> ".join((*path, module))
        if module not in done:
            for other in graph.get(module, ()):
                visit(other, (*path, module))
            done.add(module)

    for module in graph:
        visit(module, ())


def test_the_lookup_script_reads_the_callee_fields_the_cluster_reads() -> None:
    """lua/lookup.lua names the fields in Lua; keys.CALLEE_FIELDS for the cluster's HMGET."""
    text = fragment("lookup")
    call = text[text.index("redis.call('HMGET', KEYS[i + 1]") :]
    call = call[: call.index(")\n")]
    named = re.findall(r"'([^']+)'(?: \.\. client)?", call)[1:]  # after the command
    fields = [name + "{c}" if f"'{name}' .. client" in call else name for name in named]
    assert tuple(fields) == CALLEE_FIELDS
