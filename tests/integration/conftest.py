"""The real CodeTether server, once per test session (``codetether_server.py`` starts and stops it).

Integration tests are opt-in (``pytest -m integration``, ``make test-integration``); every test module in this
folder sets ``pytestmark = pytest.mark.integration``. They install nothing: without the server installed or
PostgreSQL on the machine they are skipped with a message saying what to install."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

import codetether_server as cts

INSTALL = "pip install -e '.[integration]' -c constraints/codetether.txt torch==2.13.0 (make test-integration does it)"


@pytest.fixture(scope="session")
def codetether_server() -> Iterator[cts.CodeTetherServer]:
    pg_bin, codetether = cts.find_pg_bin(), cts.find_codetether()
    if codetether is None:
        pytest.skip(f"the CodeTether server is not installed: {INSTALL}")
    if pg_bin is None:
        pytest.skip("PostgreSQL's initdb was not found: install PostgreSQL, or set PG_BIN to its bin directory")
    # Not under pytest's tmp_path: its parents are private to this user, and PostgreSQL runs as `postgres` here.
    root = Path(tempfile.mkdtemp(prefix="codetether-"))
    try:
        server = cts.start(root, pg_bin, codetether)
        try:
            yield server
        finally:
            server.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def down_url() -> str:
    """A loopback address where nothing listens."""
    return f"http://127.0.0.1:{cts.free_port()}/mcp/v1/rpc"
