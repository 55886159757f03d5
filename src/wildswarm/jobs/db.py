"""The connection to PostgreSQL: a pool, the schema's migrations, and our errors for psycopg's.

Only the ``wildswarm.jobs`` package imports psycopg. Every connection runs in
autocommit mode, so each single statement is its own transaction; transitions
that need more than one statement open a transaction explicitly.

Migrations are numbered SQL files in ``sql/`` (``0001_jobs.sql``, ...),
applied in order on start by whichever component opens the store first, under
an advisory lock so that two components starting together never both apply
one. Plain numbered SQL rather than Alembic: the schema is one table and a few
indexes, psycopg is the only database library the images carry, and anyone can
read the whole history with ``cat``.
"""
from __future__ import annotations

import contextlib
import logging
import time
from importlib import resources
from typing import Iterator

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool, PoolTimeout

from wildswarm.config import Settings
from wildswarm.errors import JobStoreDataError, JobStoreError, JobStoreUnavailable

log = logging.getLogger(__name__)

MIGRATION_LOCK = 0x77696C64  # pg_advisory lock key: "wild"


@contextlib.contextmanager
def translated(action: str) -> Iterator[None]:
    """Turn psycopg's exceptions into :class:`JobStoreError` (unreachable: :class:`JobStoreUnavailable`)."""
    try:
        yield
    except (psycopg.OperationalError, PoolTimeout) as exc:
        raise JobStoreUnavailable(f"{action}: the job store is unreachable: {_first_line(exc)}") from exc
    except psycopg.DataError as exc:
        raise JobStoreDataError(f"{action}: {_first_line(exc)}") from exc
    except psycopg.Error as exc:
        raise JobStoreError(f"{action}: {type(exc).__name__}: {_first_line(exc)}") from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def conninfo(settings: Settings) -> str:
    return make_conninfo(
        host=settings.db_host, port=settings.db_port, dbname=settings.db_name, user=settings.db_user,
        password=settings.db_password or None, connect_timeout=5,
        application_name=f"wildswarm {settings.node}"[:63],
        options=f"-c search_path={settings.db_schema},public",
    )


def migrations() -> list[tuple[int, str, str]]:
    """(number, file name, SQL) of every migration, in order."""
    found = []
    for entry in resources.files("wildswarm.jobs").joinpath("sql").iterdir():
        if entry.name.endswith(".sql"):
            found.append((int(entry.name.split("_", 1)[0]), entry.name, entry.read_text(encoding="utf-8")))
    return sorted(found)


class Database:
    """A pool of connections to the job store, with the schema migrated on :meth:`open`."""

    def __init__(self, settings: Settings, *, max_size: int | None = None):
        self.settings = settings
        self.schema = settings.db_schema
        self.pool = ConnectionPool(
            conninfo(settings), min_size=1, max_size=max_size or settings.db_pool_size, open=False,
            kwargs={"autocommit": True, "row_factory": dict_row}, check=ConnectionPool.check_connection,
            timeout=settings.db_timeout_seconds, name=f"wildswarm-{settings.node}",
        )
        self._open = False

    def open(self, wait_seconds: float = 0.0) -> "Database":
        """Open the pool and migrate; with ``wait_seconds``, keep trying that long for a store that is starting."""
        deadline = time.monotonic() + wait_seconds
        if not self._open:
            self.pool.open(wait=False)
            self._open = True
        while True:
            try:
                self.migrate()
                return self
            except JobStoreUnavailable as exc:
                if time.monotonic() >= deadline:
                    raise
                log.warning("%s; trying again", exc)
                time.sleep(1.0)

    def close(self) -> None:
        if self._open:
            self.pool.close()
            self._open = False

    def __enter__(self) -> "Database":
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    @contextlib.contextmanager
    def connection(self, action: str = "job store") -> Iterator[psycopg.Connection]:
        if not self._open:
            self.open()
        with translated(action), self.pool.connection() as conn:
            yield conn

    def migrate(self) -> list[str]:
        """Apply the migrations this schema lacks; returns the file names applied."""
        applied = []
        with self.connection("migrating the job store") as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.schema)))
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm WITH SCHEMA public")
            conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY, "
                         "name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())")
            done = {r["version"] for r in conn.execute("SELECT version FROM schema_migrations")}
            for number, name, text in migrations():
                if number in done:
                    continue
                conn.execute(text)
                conn.execute("INSERT INTO schema_migrations (version, name) VALUES (%s, %s)", (number, name))
                applied.append(name)
                log.info("job store: applied migration %s", name)
        return applied

    def drop_schema(self) -> None:
        """Remove this schema and everything in it (tests, benchmarks)."""
        with self.connection("dropping the schema") as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(self.schema)))
