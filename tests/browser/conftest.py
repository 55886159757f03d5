"""Fixtures for the browser tests: real headless Chromium (Debian's), a real web server
(``wildswarm web`` under gunicorn), the real RabbitMQ and PostgreSQL, and a real ``wildswarm worker``.

The service fixtures come from kit.fixtures. Chromium and chromedriver come
from Debian's packages: scripts/browser-local.sh installs them when missing;
nothing is downloaded at test time. Screenshots go to test-artifacts/screenshots/
(git-ignored).
"""
from __future__ import annotations

import os
import shutil
import subprocess
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


@pytest.fixture
def browser(chromium, artifacts, tmp_path):
    """A headless Chromium driven by Selenium through /usr/bin/chromedriver; downloads go to tmp_path/downloads."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    downloads = tmp_path / "downloads"
    downloads.mkdir()
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
    driver = webdriver.Chrome(service=Service(str(chromium[1]), log_output=str(tmp_path / "chromedriver.log")),
                              options=options)
    driver.set_page_load_timeout(30)
    driver.downloads = downloads
    yield driver
    driver.quit()


def copy_artifact(src: Path, name: str) -> None:
    dest = ARTIFACTS / name
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dest)
