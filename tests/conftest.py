"""Shared test setup.

The probes' voice measurements run many small complex matrix products; with OpenBLAS's default
thread pool on a small, busy machine these are an order of magnitude slower than single-threaded
(the threads fight the other pytest worker / process for the same cores). Pin the pools to one
thread before numpy is first imported; an explicit setting in the environment still wins.
"""

from __future__ import annotations

import os
import secrets
import urllib.parse
from collections.abc import Iterator

import pytest

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")


# ---------------------------------------------------------------- PostgreSQL for the job-store tests

PG_ENV = "OPENSEEDANCE_TEST_PG"
PG_DEFAULT = "postgresql://postgres@127.0.0.1:5433/postgres"  # where scripts/start-postgres.sh puts it
PG_HOWTO = ("no PostgreSQL server for the job-store tests: start one with "
            "`eval \"$(bash scripts/start-postgres.sh)\"` (Debian: apt-get install -y postgresql first), "
            f"or set ${PG_ENV} to a postgresql:// URL of a user that may create databases")


def _pg_admin() -> str | None:
    try:
        import psycopg
    except ImportError:
        return None
    url = os.environ.get(PG_ENV) or PG_DEFAULT
    try:
        psycopg.connect(url, connect_timeout=3).close()
    except psycopg.Error:
        return None
    return url


@pytest.fixture(scope="session")
def pg_admin() -> str:
    url = _pg_admin()
    if url is None:
        pytest.skip(PG_HOWTO)
    return url


@pytest.fixture
def pg_url(pg_admin: str) -> Iterator[str]:
    """The URL of a fresh, empty database, dropped afterwards."""
    import psycopg

    name = f"osd_test_{secrets.token_hex(6)}"
    with psycopg.connect(pg_admin, autocommit=True) as db:
        db.execute(f"CREATE DATABASE {name}")
    yield urllib.parse.urlsplit(pg_admin)._replace(path=f"/{name}").geturl()
    with psycopg.connect(pg_admin, autocommit=True) as db:
        db.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
