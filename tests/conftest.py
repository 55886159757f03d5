"""Every test's fixtures come from the ``kit`` plugin (tests/kit/fixtures.py); tiers are marked by folder."""
from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["kit.fixtures"]

TESTS = Path(__file__).resolve().parent

# Every test in these folders needs the real services its markers name. Tests elsewhere that
# use the job store or the broker get ``db`` / ``broker`` from the fixtures they ask for.
FOLDER_MARKERS = {"integration": ("broker", "db"), "browser": ("browser", "broker", "db"), "e2e": ("docker",),
                  "faults": ("broker", "db")}
SERVICE_FIXTURES = {"services": ("db", "broker")}


def pytest_collection_modifyitems(items):
    for item in items:
        parts = Path(item.path).resolve().relative_to(TESTS).parts
        markers = set(FOLDER_MARKERS.get(parts[0], ()) if len(parts) > 1 else ())
        if "services" in getattr(item, "fixturenames", ()):
            markers.update(("db", "broker"))
        for marker in sorted(markers):
            item.add_marker(getattr(pytest.mark, marker))
