"""A listing of jobs: filters, order and page, as one SQL WHERE clause (:meth:`JobStore.list`)."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from wildswarm.jobs.model import JobStatus

WHOLE = "parent_id IS NULL"   # a video's own job (not one of its segments)
#: The orders a listing may be sorted in; each ends on the id, so pages never overlap. Each is an index's key,
#: word for word (0014_listing_orders.sql): changed here, it must be changed there, or each page reads every row.
ORDERS = {
    "newest": "created_at DESC, id DESC",
    "oldest": "created_at ASC, id ASC",
    "animals": "animals DESC NULLS LAST, tracks DESC NULLS LAST, created_at DESC, id DESC",   # most found first
    "longest": "(media->>'duration_s')::float DESC NULLS LAST, created_at DESC, id DESC",
    "name": "lower(input_name) ASC, id ASC",
}


@dataclass(frozen=True)
class JobQuery:
    """A filtered, sorted, paged listing. Every filter is optional."""

    status: JobStatus | None = None
    node: str | None = None
    search: str | None = None          # substring of the input name, any case
    created_from: date | None = None   # inclusive
    created_to: date | None = None     # inclusive
    untrained: bool | None = None
    animals: bool | None = None        # True: done with animals found; False: done and empty
    species: str | None = None         # done, with this species among its tracked animals (exact label)
    profile: str | None = None
    deployment: str | None = None
    oldest_first: bool = False         # the same as order="oldest"
    order: str = "newest"              # one of ORDERS
    limit: int = 50
    offset: int = 0

    def where(self) -> tuple[str, dict]:
        clauses, params = [WHOLE], {}
        if self.status is not None:
            clauses.append("status = %(status)s")
            params["status"] = JobStatus(self.status).value
        if self.node:
            clauses.append("node = %(node)s")
            params["node"] = self.node
        if self.search:
            # lowered by PostgreSQL on both sides: Python lowers some letters otherwise ("İ": "i" and a dot)
            clauses.append("lower(input_name) LIKE lower(%(search)s)")
            params["search"] = "%" + _like_escape(self.search) + "%"
        if self.created_from:
            clauses.append("created_at >= %(created_from)s")
            params["created_from"] = self.created_from
        if self.created_to:
            clauses.append("created_at < %(created_to)s::date + 1")
            params["created_to"] = self.created_to
        if self.untrained is not None:
            clauses.append("untrained = %(untrained)s")
            params["untrained"] = self.untrained
        if self.animals is not None:
            clauses.append("animals > 0" if self.animals else "animals = 0")
        if self.species:
            clauses.append("species <> '{}' AND species ? %(species)s")
            params["species"] = self.species
        if self.profile:
            clauses.append("profile = %(profile)s")
            params["profile"] = self.profile
        if self.deployment:
            clauses.append("deployment_id = %(deployment)s")
            params["deployment"] = self.deployment
        return " WHERE " + " AND ".join(clauses), params

    def order_by(self) -> str:
        return ORDERS["oldest" if self.oldest_first else self.order]



def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
