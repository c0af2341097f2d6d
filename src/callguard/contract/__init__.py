"""The published contract as files: JSON Schemas (draft 2020-12) for every
message and an AsyncAPI 3.0 document for every topic.

They ship inside the package so that a dialer or a downstream consumer can
validate against exactly the version it runs, and the test suite validates
real messages from an end-to-end run against them, so they cannot drift from
the code.
"""

from __future__ import annotations

from importlib import resources
from importlib.abc import Traversable
from typing import Any

import orjson

#: Message name -> schema file, one per kind of message on the topics.
SCHEMAS = {
    "intent": "intent.schema.json",
    "decision": "decision.schema.json",
    "audit": "audit.schema.json",
    "deadletter": "deadletter.schema.json",
    "optout": "optout.schema.json",
    "outcome": "outcome.schema.json",
    "consent": "consent.schema.json",
}
ASYNCAPI = "asyncapi.yaml"


def path(name: str) -> Traversable:
    """A contract file shipped in the package (``intent.schema.json``, ``asyncapi.yaml``…)."""
    return resources.files(__name__) / name


def schema(message: str) -> dict[str, Any]:
    """The JSON Schema of one kind of message (a key of :data:`SCHEMAS`)."""
    loaded: dict[str, Any] = orjson.loads(path(SCHEMAS[message]).read_bytes())
    return loaded
