"""Deployments: where and when a camera recorded, kept with the jobs of its videos (PostgreSQL).

A deployment is one camera at one place for a while (Camtrap DP's deployment). Users give one with
an upload (or choose one already known); exports that need its fields (Camtrap DP) ask for what is
missing rather than inventing it.
"""
from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timezone

from wildswarm.errors import JobError

ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
TEXT_MAX = 500
WEBHOOK = "webhook_url"     # not a Camtrap DP field: kept apart from them (Deployments.save_given)


@dataclass(frozen=True)
class Deployment:
    id: str
    location_id: str | None = None
    location_name: str | None = None
    latitude: float | None = None
    longitude: float | None = None
    coordinate_uncertainty: int | None = None     # metres
    deployment_start: datetime | None = None
    deployment_end: datetime | None = None
    camera_id: str | None = None
    camera_model: str | None = None
    camera_height: float | None = None            # metres
    habitat: str | None = None
    comments: str | None = None

    @classmethod
    def parse(cls, data: dict) -> "Deployment":
        """From a form or JSON (strings or numbers; empty means absent): a checked deployment, or
        :class:`JobError` saying what is wrong."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise JobError(f"unknown deployment field(s): {', '.join(unknown)}")
        values = {k: (v.strip() if isinstance(v, str) else v) for k, v in data.items()}
        values = {k: v for k, v in values.items() if v not in (None, "")}
        dep_id = values.get("id")
        if not isinstance(dep_id, str) or not ID.match(dep_id):
            raise JobError("a deployment id is 1-64 letters, digits and _.:- (starting with a letter or digit)")
        try:
            for key in ("latitude", "longitude", "camera_height"):
                if key in values:
                    values[key] = _number(key, values[key])
            if "coordinate_uncertainty" in values:
                values["coordinate_uncertainty"] = _whole("coordinate_uncertainty", values["coordinate_uncertainty"])
            for key in ("deployment_start", "deployment_end"):
                if key in values:
                    values[key] = values[key] if isinstance(values[key], datetime) else exact_time(values[key])
            for key in TEXT_FIELDS:
                if key in values:
                    values[key] = _text(key, values[key])
        except ValueError as exc:
            raise JobError(f"deployment {dep_id}: {exc}") from None
        dep = cls(**values)
        dep.check()
        return dep

    def check(self) -> None:
        problems = []
        if (self.latitude is None) != (self.longitude is None):
            problems.append("give both latitude and longitude, or neither")
        if self.latitude is not None and not -90 <= self.latitude <= 90:
            problems.append("latitude must be between -90 and 90")
        if self.longitude is not None and not -180 <= self.longitude <= 180:
            problems.append("longitude must be between -180 and 180")
        if self.coordinate_uncertainty is not None and self.coordinate_uncertainty < 1:
            problems.append("coordinate uncertainty is in whole metres, at least 1")
        if self.camera_height is not None and self.camera_height < 0:
            problems.append("camera height cannot be negative")
        if self.deployment_start and self.deployment_end and self.deployment_end < self.deployment_start:
            problems.append("the deployment ends before it starts")
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, str) and (len(value) > TEXT_MAX or "\x00" in value):
                problems.append(f"{f.name} is longer than {TEXT_MAX} characters or holds a NUL")
            elif isinstance(value, str) and not _utf8(value):
                problems.append(f"{f.name} is not text that UTF-8 can hold (it has a lone surrogate)")
        if problems:
            raise JobError(f"deployment {self.id}: " + "; ".join(problems))

    def to_dict(self) -> dict:
        d = asdict(self)
        for key in ("deployment_start", "deployment_end"):
            if d[key] is not None:
                d[key] = d[key].isoformat(timespec="seconds")
        return d


TEXT_FIELDS = ("location_id", "location_name", "camera_id", "camera_model", "habitat", "comments")


def _number(key: str, value) -> float:
    """A finite number, given as a JSON number or as text: a list, true/false, NaN or infinity is
    refused (PostgreSQL ranks NaN above every number, so a NaN height would pass the table's own check,
    and every later listing would answer with NaN, which is not JSON)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"{key} must be a number, not {type(value).__name__}")
    try:
        number = float(value)
    except (ValueError, OverflowError):
        raise ValueError(f"{key} must be a number, not {value!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"{key} must be a finite number, not {value!r}")
    return number


def _whole(key: str, value) -> int:
    """A whole number (a JSON integer, a float without a fraction, or its digits as text)."""
    if isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+\s*", value):
        return int(value)
    number = _number(key, value)
    if not number.is_integer():
        raise ValueError(f"{key} must be a whole number, not {value!r}")
    return int(number)


def _utf8(text: str) -> bool:
    """Whether ``text`` can be stored (JSON may escape half a UTF-16 pair, which UTF-8 cannot hold)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _text(key: str, value) -> str:
    """Text; a number given for it (a camera id of 1234) is kept as its digits."""
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise ValueError(f"{key} must be text, not {type(value).__name__}")


def exact_time(text: str) -> datetime:
    """A time a person gave (ISO 8601), with its time of day and its UTC offset, or ValueError saying which is
    missing. The exports write it as a moment: midnight for a day alone, or UTC for a camera's local time read
    from its screen, would be made up (Camtrap DP requires the offset)."""
    text, example = str(text).strip(), "e.g. 2026-07-03T05:12:00+03:00"
    t = parse_time(text)
    if len(text) <= 10:       # ISO 8601's day alone: 2026-07-03, 20260703
        raise ValueError(f"{text!r} is a day without its time of day: give the time too ({example})")
    if datetime.fromisoformat(text.replace("Z", "+00:00")).tzinfo is None:
        raise ValueError(f"{text!r} has no UTC offset: give the camera's (+03:00, or Z for UTC; {example})")
    return t


def parse_time(value: str | datetime) -> datetime:
    """An ISO 8601 date and time (or a datetime); without a zone it is taken as UTC."""
    if isinstance(value, datetime):
        t = value
    else:
        try:
            t = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"{value!r} is not an ISO 8601 date and time (e.g. 2026-07-01T06:30:00+02:00)") from None
    t = t if t.tzinfo else t.replace(tzinfo=timezone.utc)
    try:     # in UTC within years 1-9999: PostgreSQL stores 10000-01-01, which Python cannot read back
        t.astimezone(timezone.utc)
    except OverflowError:
        raise ValueError(f"{value!r} is out of range (years 1 to 9999 in UTC)") from None
    return t


class Deployments:
    """The deployments table, on the job store's connection pool."""

    COLUMNS = [f.name for f in fields(Deployment)]

    def __init__(self, db):
        self.db = db

    def save(self, dep: Deployment) -> Deployment:
        """Add ``dep``, or replace the deployment of the same id (its jobs keep it)."""
        dep.check()
        cols = self.COLUMNS
        values = {c: getattr(dep, c) for c in cols}
        updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in cols if c != "id")
        with self.db.connection("saving a deployment") as conn:
            row = conn.execute(f"INSERT INTO deployments ({', '.join(cols)}) VALUES "
                               f"({', '.join(f'%({c})s' for c in cols)}) ON CONFLICT (id) DO UPDATE SET "
                               f"{updates}, updated_at = now() RETURNING *", values).fetchone()
        return self._from_row(row)

    def get(self, dep_id: str) -> Deployment | None:
        with self.db.connection("reading a deployment") as conn:
            row = conn.execute("SELECT * FROM deployments WHERE id = %s", (dep_id,)).fetchone()
        return self._from_row(row) if row else None

    def all(self) -> list[Deployment]:
        with self.db.connection("listing deployments") as conn:
            rows = conn.execute("SELECT * FROM deployments ORDER BY id").fetchall()
        return [self._from_row(r) for r in rows]

    def save_given(self, data: dict) -> tuple[Deployment, str | None]:
        """Save a deployment from form, JSON or command-line fields, its ``webhook_url`` apart from them
        (exports publish the fields; a webhook URL may hold a token): (the deployment, its webhook or
        None). :class:`JobError` saying what is wrong."""
        from wildswarm.notifier import WebhookError, check_webhook
        data = dict(data)
        hook = data.pop(WEBHOOK, None)
        try:
            hook = check_webhook(hook) if isinstance(hook, str) and hook.strip() else None
        except WebhookError as exc:
            raise JobError(str(exc)) from None
        dep = self.save(Deployment.parse(data))
        self.set_webhook(dep.id, hook)
        return dep, hook

    def set_webhook(self, dep_id: str, url: str | None) -> None:
        """The webhook its videos' jobs notify when they name none (None: no webhook). Kept apart from the
        deployment's fields, which exports publish: a webhook URL may hold a token."""
        with self.db.connection("saving a deployment's webhook") as conn:
            conn.execute("UPDATE deployments SET webhook_url = %s WHERE id = %s", (url, dep_id))

    def webhooks(self) -> dict[str, str]:
        with self.db.connection("reading deployments' webhooks") as conn:
            rows = conn.execute("SELECT id, webhook_url FROM deployments WHERE webhook_url IS NOT NULL").fetchall()
        return {r["id"]: r["webhook_url"] for r in rows}

    def finished_jobs(self, dep_id: str) -> list[str]:
        """The ids of the finished videos recorded in deployment ``dep_id``, oldest first."""
        with self.db.connection("listing a deployment's jobs") as conn:
            rows = conn.execute("SELECT id FROM jobs WHERE deployment_id = %s AND status = 'done' AND parent_id IS NULL "
                                "ORDER BY created_at, id", (dep_id,)).fetchall()
        return [r["id"] for r in rows]

    def _from_row(self, row: dict) -> Deployment:
        return Deployment(**{c: row[c] for c in self.COLUMNS})
