"""Fixtures: a server per test module, or per test for those that restart, crash or count every row."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from platform_harness import PlatformProcess

from inferstack.targets.local.client import PlatformClient


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PlatformProcess]:
    """One server for a test module; tests use their own service keys."""
    p = PlatformProcess(tmp_path_factory.mktemp("platform")).start()
    yield p
    p.stop()


@pytest.fixture
def fresh_platform(tmp_path: Path) -> Iterator[PlatformProcess]:
    """A server of its own, for tests that restart, crash or count every row."""
    p = PlatformProcess(tmp_path / "data").start()
    yield p
    p.stop()


@pytest.fixture
def client(platform: PlatformProcess) -> Iterator[PlatformClient]:
    with platform.client() as c:
        yield c
