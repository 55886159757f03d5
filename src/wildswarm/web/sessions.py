"""Logins that can be ended, and guessing that is slowed down.

**Sessions live on the server** (table ``web_sessions`` of the job store, shared by every web
worker and replica). The browser's signed cookie holds only a random session id; the table
holds its SHA-256, the user, when it expires, and an HMAC of the password it was opened with.
A request counts as logged in only while that row exists, has not expired and was opened with
the current password. So logging out (the row is deleted) ends a session for every copy of its
cookie, and a new password ends every session opened with the old one.

**Failed logins are counted** per client address and per user name (table ``login_failures``):
after ``web_login_max_failures`` failures within ``web_login_window_seconds``, further attempts
are refused (HTTP 429, ``Retry-After``) for ``web_login_lock_seconds``, doubling with each
further failure up to the window. A success clears the address's count. Wrong bearer tokens
are counted per address too, apart from the form's: the token opens as much as the password. The
proxy in front adds a request-rate limit of its own (``limit_req``, on the login form).
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from wildswarm.config import Settings
from wildswarm.jobs.db import Database

SESSION_ID_BYTES = 32


def _hash(session_id: str) -> str:
    return hashlib.sha256(session_id.encode("ascii", "replace")).hexdigest()


def credential(settings: Settings) -> str:
    """What a session remembers of the password: an HMAC keyed by the session key (never the password)."""
    return hmac.new(settings.web_secret_key.encode(), b"password:" + settings.web_password.encode(),
                    hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Lock:
    """Logins refused for this client or user until ``seconds`` from now."""

    seconds: int
    key: str


class Sessions:
    def __init__(self, settings: Settings, db: Database):
        self.settings, self.db = settings, db

    # --- sessions ------------------------------------------------------------------------
    def open(self, user: str) -> str:
        """A new session for ``user``; returns the id for the cookie (only its hash is stored)."""
        session_id = secrets.token_urlsafe(SESSION_ID_BYTES)
        with self.db.connection("opening a session") as conn:
            conn.execute("DELETE FROM web_sessions WHERE expires_at < now()")
            conn.execute("INSERT INTO web_sessions (id_hash, user_name, credential, expires_at) "
                         "VALUES (%s, %s, %s, now() + make_interval(secs => %s))",
                         (_hash(session_id), user, credential(self.settings),
                          float(self.settings.web_session_seconds)))
        return session_id

    def valid(self, session_id: object) -> str | None:
        """The user of a live session opened with the current password, or None."""
        if not isinstance(session_id, str) or not 20 <= len(session_id) <= 100:
            return None
        with self.db.connection("checking a session") as conn:
            row = conn.execute("UPDATE web_sessions SET last_seen = now() WHERE id_hash = %s AND "
                               "expires_at > now() AND credential = %s RETURNING user_name",
                               (_hash(session_id), credential(self.settings))).fetchone()
        return row["user_name"] if row else None

    def close(self, session_id: object) -> None:
        if isinstance(session_id, str):
            with self.db.connection("closing a session") as conn:
                conn.execute("DELETE FROM web_sessions WHERE id_hash = %s", (_hash(session_id),))

    # --- throttling -------------------------------------------------------------------------
    def _keys(self, address: str, user: str | None) -> list[tuple[str, int]]:
        """The counters a failure from ``address`` as ``user`` adds to. ``user`` None: a wrong bearer token,
        counted apart (``token:``), so that each way in locks only itself: a password mistyped behind a
        lab's one address leaves its scripts' token alone, and a script's stale token the login form."""
        s = self.settings
        if user is None:
            return [(f"token:{address}"[:200], s.web_login_max_failures)]
        return [(f"ip:{address}"[:200], s.web_login_max_failures),
                (f"user:{user}"[:200], 4 * s.web_login_max_failures)]

    def locked(self, address: str, user: str | None = None) -> Lock | None:
        """Whether logins from ``address`` as ``user`` (None: bearer tokens from ``address``) are refused
        now, and for how long."""
        keys = [k for k, _ in self._keys(address, user)]
        with self.db.connection("checking login failures") as conn:
            row = conn.execute("SELECT key, ceil(extract(epoch FROM locked_until - now()))::int AS left "
                               "FROM login_failures WHERE key = ANY(%s) AND locked_until > now() "
                               "ORDER BY locked_until DESC LIMIT 1", (keys,)).fetchone()
        return Lock(max(1, row["left"]), row["key"]) if row else None

    def failed(self, address: str, user: str | None = None) -> None:
        """Count a failed login for the address and the user name (None: a wrong bearer token from the
        address), locking them when over the limit."""
        s = self.settings
        with self.db.connection("counting a failed login") as conn:
            # failures older than the window are forgotten: so are their rows (a row for every user name
            # ever tried would grow the table for as long as anyone can reach the login form)
            conn.execute("DELETE FROM login_failures WHERE window_start < now() - make_interval(secs => %s) "
                         "AND (locked_until IS NULL OR locked_until < now())", (float(s.web_login_window_seconds),))
            for key, limit in self._keys(address, user):
                conn.execute(
                    "INSERT INTO login_failures AS f (key, failures, window_start) VALUES (%(key)s, 1, now()) "
                    "ON CONFLICT (key) DO UPDATE SET "
                    "failures = CASE WHEN f.window_start < now() - make_interval(secs => %(window)s) "
                    "THEN 1 ELSE f.failures + 1 END, "
                    "window_start = CASE WHEN f.window_start < now() - make_interval(secs => %(window)s) "
                    "THEN now() ELSE f.window_start END", {"key": key, "window": float(s.web_login_window_seconds)})
                conn.execute(
                    "UPDATE login_failures SET locked_until = now() + make_interval(secs => least(%(window)s, "
                    "%(lock)s * power(2, failures - %(limit)s))) WHERE key = %(key)s AND failures >= %(limit)s",
                    {"key": key, "limit": limit, "lock": float(s.web_login_lock_seconds),
                     "window": float(s.web_login_window_seconds)})

    def succeeded(self, address: str) -> None:
        with self.db.connection("clearing login failures") as conn:
            conn.execute("DELETE FROM login_failures WHERE key = %s", (f"ip:{address}"[:200],))
