"""Admissions under way: what a video asked for, kept while it moves into input/ until its job is recorded.

Intake moves a video into input/ first and records its job after (the name it gets is only known once
it has claimed it there). What the admission asked for (profile, deployment, recording time, webhook)
is written here before the move; the statement that records the job deletes it (``JobStore.submit``).
If the process dies between the two, the producer finds the video in input/ without a job and finishes
the admission with what was asked, instead of queueing it as a plain dropped file.
"""
from __future__ import annotations

from psycopg.types.json import Jsonb

from wildswarm.jobs.clauses import db_text

# An admission no video arrived for (its move failed, its file was deleted) is forgotten after this long.
FORGET_AFTER_DAYS = 30


def _text(value):
    """A value as jsonb takes it: a string's lone surrogates (a file name of Latin-1 bytes quoted in its source)
    replaced, then as :func:`db_text` makes text (no NULs, which PostgreSQL refuses in JSON too)."""
    if not isinstance(value, str):
        return value
    return db_text(value.encode("utf-8", "replace").decode("utf-8"))


class Admissions:
    """The admissions table, on the job store's connection pool."""

    def __init__(self, db):
        self.db = db

    def ask(self, job_id: str, input_name: str, asked: dict) -> None:
        """Keep what the video of job ``job_id`` asked for until its job is recorded (the later asking wins)."""
        with self.db.connection("recording an admission") as conn:
            conn.execute("WITH old AS (DELETE FROM admissions WHERE asked_at < now() - make_interval(days => %s)) "
                         "INSERT INTO admissions (id, input_name, asked) VALUES (%s, %s, %s) ON CONFLICT (id) DO "
                         "UPDATE SET input_name = EXCLUDED.input_name, asked = EXCLUDED.asked, asked_at = now()",
                         (FORGET_AFTER_DAYS, job_id, input_name, Jsonb({k: _text(v) for k, v in asked.items()})))

    def asked(self, job_id: str) -> dict | None:
        """What an admission of ``job_id`` that did not get as far as recording its job asked for."""
        with self.db.connection("reading an admission") as conn:
            row = conn.execute("SELECT asked FROM admissions WHERE id = %s", (job_id,)).fetchone()
        return row["asked"] if row else None

    def forget(self, job_id: str) -> None:
        """An admission that ended before its video moved (refused, failed): nothing to finish."""
        with self.db.connection("forgetting an admission") as conn:
            conn.execute("DELETE FROM admissions WHERE id = %s", (job_id,))
