"""The browser fixture's Chromium leaves nothing in the machine's temporary folder.

Chromium keeps its single-instance socket in ``$TMPDIR/org.chromium.Chromium.XXXXXX`` and does not
remove that folder when chromedriver ends it, so every browser test left one in /tmp (dozens a run).
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
from kit.machine import left_behind

from conftest import open_browser


@pytest.fixture
def short_tmp(monkeypatch):
    """The folder ``tempfile`` and ``TMPDIR`` hand out during the test, with a short path: a Unix socket's
    path must fit in 108 bytes, and Chromium's goes under ``$TMPDIR`` (pytest's tmp_path is too long)."""
    folder = Path(tempfile.mkdtemp(prefix="ws-t-"))
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    monkeypatch.setenv("TMPDIR", str(folder))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_chromium_leaves_nothing_in_tmp(chromium, tmp_path, short_tmp):
    with open_browser(chromium, tmp_path / "downloads", tmp_path / "chromedriver.log") as driver:
        driver.get("data:text/html,<title>here</title>")
        assert driver.title == "here"
    assert not left_behind(short_tmp)
