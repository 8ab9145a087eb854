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
            "`eval \"$(bash scripts/start-postgres.sh)\"` (it installs Debian's postgresql when missing), "
            f"or set ${PG_ENV} to a postgresql:// URL of a user that may create databases")


@pytest.fixture(scope="session")
def pg_admin() -> str:
    """A PostgreSQL URL that may create databases: ${PG_ENV} (then it must answer), else the script's
    default address (when nothing answers there, the PostgreSQL tests are skipped, saying how to start it)."""
    named = os.environ.get(PG_ENV)
    try:
        import psycopg
    except ImportError:
        pytest.skip("psycopg is not installed: pip install -e '.[dev]'")
    try:
        psycopg.connect(named or PG_DEFAULT, connect_timeout=5).close()
    except psycopg.Error as e:
        if named:
            pytest.fail(f"${PG_ENV} names a PostgreSQL server that does not answer: {e}")
        pytest.skip(PG_HOWTO)
    return named or PG_DEFAULT


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
