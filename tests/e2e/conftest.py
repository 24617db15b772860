"""Fixtures of the end-to-end tests: each module defines the `stack` they run against."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.e2e.harness import Stack


@pytest.fixture
def api(stack: Stack) -> Iterator[httpx.Client]:
    """A client of the API of the test's `stack`."""
    with stack.api() as client:
        yield client
