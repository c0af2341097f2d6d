"""Read-only dicts and lists for what decisions share.

A cached rule result (a calling-hours verdict, the frequency caps' empty
counts) and a policy's lookback are handed to many decisions: were one
decision's audit record changed in place, every other would change with it.
These refuse every change, and are still a ``dict`` and a ``list``: compared,
read and serialised (``orjson``, ``json``) exactly as the plain ones, and
shared without a copy.
"""

from __future__ import annotations

from typing import Any, NoReturn


class FrozenDict(dict[str, Any]):
    """A dict that refuses every change."""

    __slots__ = ()

    def _refuse(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError("shared by many decisions: read-only")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = __ior__ = _refuse


class FrozenList(list[Any]):
    """A list that refuses every change."""

    __slots__ = ()

    def _refuse(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError("shared by many decisions: read-only")

    __setitem__ = __delitem__ = __iadd__ = __imul__ = _refuse
    append = extend = insert = remove = pop = clear = sort = reverse = _refuse


def frozen(value: Any) -> Any:
    """``value`` with its dicts and lists, at any depth, made read-only."""
    if isinstance(value, dict):
        return FrozenDict({key: frozen(item) for key, item in value.items()})
    if isinstance(value, list):
        return FrozenList(frozen(item) for item in value)
    return value
