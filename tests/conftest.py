"""Every test's fixtures come from the ``kit`` plugin (tests/kit/fixtures.py); tiers are marked by folder."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from kit import machine

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


_MACHINE: list[str] = []


def pytest_sessionstart(session):
    """Note the machine's state, then (under ``make test``) remove what interrupted test sessions left."""
    _MACHINE[:] = machine.header()
    if os.environ.get("WILDSWARM_REQUIRE_DOCKER") == "1":
        machine.remove_leftovers(log=_MACHINE.append)


def pytest_report_header(config):
    return list(_MACHINE)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed test that used the services says whether RabbitMQ was blocking publishers then,
    and how much disk was free: the two reasons a whole run fails slowly on a crowded machine."""
    outcome = yield
    report = outcome.get_result()
    if report.failed and {"db_settings", "services"} & set(getattr(item, "fixturenames", ())):
        from kit.fixtures import SESSION_SERVICES
        from kit.services import broker_alarms
        lines = [machine.resources()]
        if SESSION_SERVICES:
            lines += broker_alarms(SESSION_SERVICES[0], timeout=5) or ["RabbitMQ: no resource alarm"]
        report.sections.append(("machine at the failure", "\n".join(lines)))
