"""Reading a job listing's filters from a URL's query string, strictly (a bad value is a 400, never a 500)."""
from __future__ import annotations

import re
from datetime import date

from werkzeug.datastructures import MultiDict

from wildswarm.jobs import JobQuery, JobStatus
from wildswarm.jobs.query import ORDERS

MAX_LIMIT = 1000
MAX_OFFSET = 100_000
TOTAL_CAP = 10_000          # counting stops here: "10,000 or more" keeps a listing fast at any size
CHANGES_LIMIT = 500
_DIGITS = re.compile(r"[0-9]{1,18}")     # ASCII digits only: str.isdigit() also takes "²"
MAX_SEARCH = 200


class BadQuery(ValueError):
    """A filter or paging value that is not valid; the message says which and why."""


def whole_number(args: MultiDict, name: str, default: int, low: int, high: int) -> int:
    raw = args.get(name)
    if raw is None or raw == "":
        return default
    if not _DIGITS.fullmatch(raw) or not low <= int(raw) <= high:
        raise BadQuery(f"{name} must be a whole number from {low} to {high}")
    return int(raw)


def _day(args: MultiDict, name: str) -> date | None:
    raw = args.get(name) or None
    if raw is None:
        return None
    try:
        return date.fromisoformat(raw) if re.fullmatch(r"\d{4}-\d{2}-\d{2}", raw) else _bad(name)
    except ValueError:
        return _bad(name)


def _bad(name: str):
    raise BadQuery(f"{name} must be a date, YYYY-MM-DD")


def _printable(raw: str, longest: int) -> bool:
    """At most ``longest`` characters, none a control character, all of them UTF-8 can hold (a JSON
    filter may escape half a UTF-16 pair, "\\ud800", which the job store cannot be asked about)."""
    return len(raw) <= longest and not any(ord(c) < 32 or 0xD800 <= ord(c) <= 0xDFFF for c in raw)


def _text(args: MultiDict, name: str, longest: int) -> str | None:
    raw = (args.get(name) or "").strip() or None
    if raw is not None and not _printable(raw, longest):
        raise BadQuery(f"{name} must be at most {longest} printable characters")
    return raw


def job_query(args: MultiDict, default_limit: int = 50) -> JobQuery:
    """The :class:`JobQuery` a listing URL asks for; :class:`BadQuery` if a value is not valid."""
    status = args.get("status") or None
    if status is not None and status not in {s.value for s in JobStatus}:
        raise BadQuery(f"status must be one of {', '.join(s.value for s in JobStatus)}")
    untrained = args.get("untrained") or None
    if untrained not in (None, "yes", "no", "true", "false", "1", "0"):
        raise BadQuery("untrained must be yes or no")
    search = (args.get("q") or "").strip() or None
    if search is not None and not _printable(search, MAX_SEARCH):
        raise BadQuery(f"q must be at most {MAX_SEARCH} printable characters")
    node = (args.get("node") or "").strip() or None
    if node is not None and not _printable(node, 255):
        raise BadQuery("node must be a node name")
    animals = args.get("animals") or None
    if animals not in (None, "yes", "no"):
        raise BadQuery("animals must be yes (some found) or no (none found)")
    species, profile, deployment = (_text(args, name, 100) for name in ("species", "profile", "deployment"))
    order = args.get("order") or "newest"
    if order not in ORDERS:
        raise BadQuery(f"order must be one of: {', '.join(ORDERS)}")
    return JobQuery(
        status=JobStatus(status) if status else None, node=node, search=search,
        created_from=_day(args, "from"), created_to=_day(args, "to"),
        untrained=None if untrained is None else untrained in ("yes", "true", "1"),
        animals=None if animals is None else animals == "yes", species=species, profile=profile,
        deployment=deployment,
        order=order,
        limit=whole_number(args, "limit", default_limit, 1, MAX_LIMIT),
        offset=whole_number(args, "offset", 0, 0, MAX_OFFSET),
    )
