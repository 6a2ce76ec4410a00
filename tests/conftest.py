from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.support.ptys import PtyPair


@pytest.fixture
def pty_pair(tmp_path: Path) -> Iterator[PtyPair]:
    with PtyPair(tmp_path, "line") as pair:
        yield pair


@pytest.fixture(autouse=True)
async def _stop_input_hubs() -> AsyncIterator[None]:
    """Input hubs made by tests/support/devices.env_for poll until stopped: stop them after each test."""
    yield
    from tests.support.devices import stop_hubs

    await stop_hubs()
