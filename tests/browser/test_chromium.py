"""The browser fixture's Chromium leaves nothing in the machine's temporary folder.

Chromium keeps its single-instance socket in ``$TMPDIR/org.chromium.Chromium.XXXXXX`` and does not
remove that folder when chromedriver ends it, so every browser test left one in /tmp (dozens a run).
"""
from __future__ import annotations

from kit.machine import left_behind

from conftest import open_browser


def test_chromium_leaves_nothing_in_tmp(chromium, tmp_path, system_tmp):
    with open_browser(chromium, tmp_path / "downloads", tmp_path / "chromedriver.log") as driver:
        driver.get("data:text/html,<title>here</title>")
        assert driver.title == "here"
    assert not left_behind(system_tmp)
