"""Fixtures for the browser tests: real headless Chromium (Debian's), a real web server
(``wildswarm web`` under gunicorn), the real RabbitMQ and PostgreSQL, and a real ``wildswarm worker``.

The service fixtures come from kit.fixtures. Chromium and chromedriver come
from Debian's packages: scripts/browser-local.sh installs them when missing;
nothing is downloaded at test time. Screenshots go to test-artifacts/screenshots/
(git-ignored).
"""
from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "browser-local.sh"
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
ARTIFACTS = ROOT / "test-artifacts"


@pytest.fixture(scope="session")
def chromium() -> tuple[Path, Path]:
    """Debian's chromium and chromedriver, installed by scripts/browser-local.sh if missing."""
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        if os.geteuid() != 0:
            pytest.fail(f"chromium/chromedriver missing and not root to install them: run `sudo {SCRIPT}`")
        subprocess.run(["bash", str(SCRIPT)], check=True, timeout=900)
    return CHROMIUM, CHROMEDRIVER


@pytest.fixture(scope="session")
def artifacts() -> Path:
    shots = ARTIFACTS / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@contextlib.contextmanager
def open_browser(chromium: tuple[Path, Path], downloads: Path, log: Path):
    """A headless Chromium driven by Selenium through chromedriver; downloads go to ``downloads``.

    Chromium puts its single-instance socket in a folder of its own under ``$TMPDIR`` and leaves that
    folder behind when it is ended, so it gets a ``TMPDIR`` of its own, removed after it quits."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    downloads.mkdir(parents=True, exist_ok=True)
    options = webdriver.ChromeOptions()
    options.binary_location = str(chromium[0])
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,900", "--autoplay-policy=no-user-gesture-required", "--mute-audio",
                "--no-first-run", "--disable-extensions", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--metrics-recording-only"):
        options.add_argument(arg)
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False,
                                              "safebrowsing.enabled": False})
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    with tempfile.TemporaryDirectory(prefix="ws-chromium-") as own_tmp:
        service = Service(str(chromium[1]), log_output=str(log), env={**os.environ, "TMPDIR": own_tmp})
        driver = webdriver.Chrome(service=service, options=options)
        try:
            driver.set_page_load_timeout(30)
            driver.downloads = downloads
            yield driver
        finally:
            driver.quit()


@pytest.fixture
def browser(chromium, artifacts, tmp_path):
    """A headless Chromium (``open_browser``); downloads go to tmp_path/downloads."""
    with open_browser(chromium, tmp_path / "downloads", tmp_path / "chromedriver.log") as driver:
        yield driver


def copy_artifact(src: Path, name: str) -> None:
    dest = ARTIFACTS / name
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dest)
