"""The storage tests' stores on the session's Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from callguard.storage.factory import open_stores
from callguard.storage.stores import Stores


@pytest.fixture
async def stores(embedded: Any) -> AsyncIterator[Stores]:
    """Stores on the session's Redis (a module with servers of its own defines its own)."""
    client = open_stores(embedded.redis_url, timeout=30)
    yield client
    await client.close()
