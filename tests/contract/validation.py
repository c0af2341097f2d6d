"""Validation against the shipped contract: every schema registered under its
``$id`` so that references between them (``decision.schema.json#/$defs/…``)
resolve, and formats checked."""

from __future__ import annotations

from functools import cache
from typing import Any

import jsonschema
from referencing import Registry, Resource

from callguard.contract import SCHEMAS, schema


@cache
def registry() -> Registry:
    return Registry().with_resources((schema(kind)["$id"], Resource.from_contents(schema(kind))) for kind in SCHEMAS)


@cache
def validator(kind: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(
        schema(kind), registry=registry(), format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )


def validate(message: Any, kind: str) -> None:
    """Raise ``jsonschema.ValidationError`` when ``message`` breaks the ``kind`` schema."""
    validator(kind).validate(message)


def errors(message: Any, kind: str) -> list[str]:
    return [error.message for error in validator(kind).iter_errors(message)]
