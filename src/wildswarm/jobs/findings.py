"""What the analysis of each video found (animals, tracks, species), kept with its job for listings.

The worker records it when a job is done (:func:`findings_of` its summary); :func:`backfill` gives
the results of earlier versions theirs, from their ``summary.json``.
"""
from __future__ import annotations

import json
from pathlib import Path

from psycopg.types.json import Jsonb

from wildswarm.jobs.model import Job
from wildswarm.jobs.store import CHANGED, JobStore


def findings_of(summary: dict) -> dict:
    """What a run's ``summary.json`` says it found, as the job store records it: the most animals in
    one frame, the distinct animals tracked, and each species with the tracked animals of it (the
    detections of each species where no track carries one). Empty for a summary without animals."""
    animals = (summary or {}).get("animals")
    if not isinstance(animals, dict):
        return {}
    species: dict[str, int] = {}
    for track in summary.get("tracks") or []:
        if track.get("species"):
            species[track["species"]] = species.get(track["species"], 0) + 1
    if not species:
        species = {str(k): int(v) for k, v in (animals.get("species") or {}).items() if k}
    return {"animals": int(animals.get("max_per_frame") or 0), "tracks": int(animals.get("distinct") or 0),
            "species": dict(sorted(species.items(), key=lambda kv: (-kv[1], kv[0])))}


def species_seen(store: JobStore, recent: int = 5000) -> list[str]:
    """The species named in the ``recent`` latest videos where any was, for a filter to offer."""
    with store.db.connection("listing species") as conn:
        rows = conn.execute("SELECT DISTINCT jsonb_object_keys(species) AS s FROM (SELECT species FROM jobs "
                            "WHERE parent_id IS NULL AND species <> '{}' ORDER BY created_at DESC LIMIT %s) r "
                            "ORDER BY s", (recent,)).fetchall()
    return [r["s"] for r in rows]


def without_findings(store: JobStore, after: str, limit: int) -> list[Job]:
    """Done videos whose findings are not recorded (analysed by an older version), by id after ``after``."""
    return store._many("listing jobs without findings",
                       "SELECT * FROM jobs WHERE status = 'done' AND parent_id IS NULL AND animals IS NULL "
                       "AND output IS NOT NULL AND id > %s ORDER BY id LIMIT %s", (after, limit))


def record_findings(store: JobStore, job_id: str, findings: dict) -> Job | None:
    return store._one("recording findings",
                      f"UPDATE jobs SET animals = %(animals)s, tracks = %(tracks)s, species = %(species)s, {CHANGED} "
                      "WHERE id = %(id)s AND status = 'done' AND animals IS NULL RETURNING *",
                      {"id": job_id, "animals": findings["animals"], "tracks": findings["tracks"],
                       "species": Jsonb(findings["species"])})


def backfill(store: JobStore, output: Path, after: str = "", batch: int = 200) -> tuple[int, str | None]:
    """Record the findings of up to ``batch`` done videos analysed before findings were kept, from their
    ``summary.json``: (how many were recorded, the id to go on after; None when none are left). A
    result folder that is gone or unreadable is passed over (its video shows no findings)."""
    jobs = without_findings(store, after, batch)
    recorded = 0
    for job in jobs:
        try:
            summary = json.loads((output / job.output / "summary.json").read_text(encoding="utf-8"))
            found = findings_of(summary) if isinstance(summary, dict) else {}
        except (OSError, ValueError, TypeError, AttributeError):   # gone, or not a summary it can read
            continue
        if found and record_findings(store, job.id, found) is not None:
            recorded += 1
    return recorded, (jobs[-1].id if len(jobs) == batch else None)
