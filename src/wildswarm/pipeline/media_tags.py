"""What a video says of itself: when it was recorded and with which camera, from its container's tags.

Read at intake (``Intake._media``) and kept with the job (``jobs.media``); the exports take the recording
time from here where no time was given with the upload.
"""
from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from wildswarm.pipeline.video import _open

#: Container and stream tags cameras and phones write, per field (first found wins).
_TAGS = {
    "make": ("com.apple.quicktime.make", "make", "com.android.manufacturer", "manufacturer"),
    "model": ("com.apple.quicktime.model", "model", "com.android.model"),
    "serial": ("com.apple.quicktime.serial", "serial_number", "serial", "camera_serial_number"),
    "software": ("com.apple.quicktime.software", "software", "encoder"),
}
#: Dates written by re-encoders and cameras without a clock: no date at all.
_ZERO_DATES = ("0000", "1904-01-01", "1970-01-01")


def media_metadata(path: Path) -> dict:
    """What the video says of itself: ``creation_time`` (ISO 8601, UTC where no zone is given), the
    camera's ``make``, ``model`` and ``serial``, the ``software`` that wrote it; absent keys are
    unknown. A zero date (1904 or 1970, as re-encoders write) counts as unknown, and so does a day
    without its time of day (a ``©day`` of ``2026-07-03``): midnight UTC would be made up."""
    container = _open(path)
    try:
        tags = {k.lower(): str(v).strip() for k, v in container.metadata.items()}
        for stream in container.streams.video[:1]:
            for k, v in stream.metadata.items():
                tags.setdefault(k.lower(), str(v).strip())
    finally:
        container.close()
    out = {}
    for key, names in _TAGS.items():
        value = next((tags[n] for n in names if tags.get(n)), None)
        if value and "\x00" not in value:
            out[key] = value[:200]
    for name in ("com.apple.quicktime.creationdate", "creation_time", "date"):     # the first that says
        t = _tag_time(tags.get(name))
        if t is not None:
            out["creation_time"] = t
            break
    return out


def _tag_time(created: str | None) -> str | None:
    """A date tag's time (ISO 8601, UTC where no zone is given), or None where it says none: absent, a zero date,
    a day without its time of day, or not a time at all (the next tag may still say)."""
    if not created or created.startswith(_ZERO_DATES) or len(created) <= 10:   # 10: ISO 8601's day alone
        return None
    try:
        t = datetime.fromisoformat(created.replace("Z", "+00:00"))
    except ValueError:
        return None
    return (t if t.tzinfo else t.replace(tzinfo=timezone.utc)).isoformat(timespec="seconds")
