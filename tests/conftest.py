from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.ptys import PtyPair


@pytest.fixture
def pty_pair(tmp_path: Path) -> Iterator[PtyPair]:
    with PtyPair(tmp_path, "line") as pair:
        yield pair
