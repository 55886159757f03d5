"""The user-facing path in a real browser: log in, upload a real video, watch its job progress to
done (a real worker running the real pipeline on untrained weights), play the annotated video,
see the plot and the untrained-weights warning, download the outputs. Screenshots of every page
go to test-artifacts/screenshots/."""
from __future__ import annotations

import json
import urllib.request
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest

from kit.procs import start_web as kit_start_web

PASSWORD = "browser test password"
SECRET = "browser-test-secret-key-0123456789"
TOKEN = "browser-test-token-0123456789"
SHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"


def start_web(settings, spawn):
    return kit_start_web(settings, spawn, password=PASSWORD, secret=SECRET, token=TOKEN)


@pytest.fixture
def stack(broker_settings, store, spawn, untrained_models_dir):
    """Web server, and a worker with the real pipeline on untrained weights (small and fast)."""
    worker_settings = broker_settings.replace(
        analyzer="", untrained=True, models_dir=untrained_models_dir, device="cpu", detection_threshold=0.001,
        max_animals=2, detector_image_size=320, fps=5, batch_size=4)
    worker = spawn(worker_settings, "worker", node="worker-1")        # loads its models meanwhile
    web_settings, web, base = start_web(broker_settings, spawn)
    return SimpleNamespace(base=base, settings=web_settings, web=web, worker=worker, store=store)


def shot(driver, name: str) -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    driver.save_screenshot(str(path))
    return path


def api_upload(base: str, video: Path) -> str:
    """Upload ``video`` as a script does (multipart, the API token): its new job's id (201, or an error)."""
    boundary = "xYzBoundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{video.name}\"\r\n\r\n"
            ).encode() + video.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    req = urllib.request.Request(base + "/api/jobs", data=body, headers={
        "Authorization": f"Bearer {TOKEN}", "Content-Type": f"multipart/form-data; boundary={boundary}"})
    with urllib.request.urlopen(req, timeout=20) as r:
        assert r.status == 201
        return json.loads(r.read())["job"]["id"]


def login(driver, base: str, path: str = "/") -> None:
    from selenium.webdriver.common.by import By
    driver.get(base + path)
    assert "/login" in driver.current_url
    driver.find_element(By.NAME, "password").send_keys(PASSWORD)
    driver.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    wait(driver, lambda d: "/login" not in d.current_url, 10)


# What chromedriver answers when the document was swapped between finding an element and reading it
# (a form posted, a reload): the new page is on its way, so look again. Anything else is a real failure.
DOCUMENT_SWAPPED = ("does not belong to the document", "No node with given id found",
                    "Execution context was destroyed")


def wait(driver, predicate, timeout: float, what: str = "the page"):
    from selenium.common.exceptions import (NoSuchElementException, StaleElementReferenceException,
                                            WebDriverException)
    from selenium.webdriver.support.ui import WebDriverWait

    def looked_at(d):
        try:
            return predicate(d)
        except (NoSuchElementException, StaleElementReferenceException):
            raise
        except WebDriverException as exc:
            if any(phrase in (exc.msg or "") for phrase in DOCUMENT_SWAPPED):
                return False
            raise
    # a page being replaced answers for its old elements with these too: look again
    return WebDriverWait(driver, timeout, poll_frequency=0.25,
                         ignored_exceptions=(NoSuchElementException, StaleElementReferenceException)).until(
        looked_at, f"timed out waiting for {what}")


def no_console_errors(driver, allow: tuple[str, ...] = ()) -> None:
    """No script errors, CSP violations or failed loads in the browser's console (but those in ``allow``)."""
    errors = [e for e in driver.get_log("browser")
              if e["level"] == "SEVERE" and not any(a in e["message"] for a in allow)]
    assert not errors, errors


def test_upload_watch_play_download(browser, stack, make_video, tmp_path):
    from selenium.webdriver.common.by import By
    driver, base = browser, stack.base
    video = make_video("Red fox, night.mp4", frames=12)

    login(driver, base)
    assert driver.find_element(By.TAG_NAME, "h1").text == "Upload videos"
    driver.find_element(By.ID, "files").send_keys(str(video))
    wait(driver, lambda d: "Red fox, night.mp4" in d.find_element(By.ID, "queue").text, 5, "the chosen file")
    shot(driver, "upload")
    driver.find_element(By.ID, "upload-button").click()

    # lands on the job page; the status goes live to done (the page polls the API every 2 s)
    wait(driver, lambda d: "/jobs/" in d.current_url, 30, "the job page")
    job_id = driver.current_url.rstrip("/").rsplit("/", 1)[1]
    assert driver.find_element(By.CSS_SELECTOR, "h1.name").text == "Red_fox_night.mp4"
    shot(driver, "job-queued")
    # (no reload from here on: the page's script follows the job and reloads once it is finished)
    wait(driver, lambda d: d.find_element(By.ID, "job-status").text in ("done", "failed"), 240,
         "the job to finish")
    status = driver.find_element(By.ID, "job-status").text
    job = stack.store.get(job_id)
    assert status == "done", f"{job.error}\n{stack.worker.output()[-3000:]}"
    assert job.node == "worker-1" and job.untrained

    # the annotated video plays: no media error, data loaded, time advances. (The status turns "done"
    # just before the page's script reloads it with the results: until then there is no video element.)
    wait(driver, lambda d: d.execute_script("const v = document.getElementById('labeled'); "
                                            "return v ? v.readyState : -1") >= 2, 20, "the video's data")
    state = driver.execute_async_script("""
        const done = arguments[arguments.length - 1];
        const v = document.getElementById('labeled');
        v.muted = true;
        v.play().then(() => setTimeout(() => done({t: v.currentTime, err: v.error && v.error.code,
                                                   d: v.duration, w: v.videoWidth}), 600))
                .catch(e => done({err: String(e)}));
    """)
    assert not state.get("err") and state["t"] > 0 and state["d"] > 0 and state["w"] > 0, state
    assert driver.execute_script("return document.getElementById('trajectory').naturalWidth") > 0
    warning = driver.find_element(By.ID, "untrained-warning")
    assert warning.is_displayed() and "UNTRAINED" in warning.text
    shot(driver, "job")

    # downloads: one file, then everything as a zip
    driver.find_element(By.CSS_SELECTOR, "a[href$='/files/summary.json?download=1']").click()
    driver.find_element(By.ID, "zip").click()
    downloads = driver.downloads

    def complete():
        names = {p.name for p in downloads.iterdir()}
        return {"summary.json", "Red_fox_night.zip"} <= names and not any(n.endswith(".crdownload") for n in names)
    wait(driver, lambda d: complete(), 30, "the downloads")
    summary = json.loads((downloads / "summary.json").read_text())
    assert summary["untrained_weights"] is True
    archive = zipfile.ZipFile(downloads / "Red_fox_night.zip")
    assert archive.testzip() is None
    names = {n.split("/", 1)[1] for n in archive.namelist()}
    assert {"labeled.mp4", "detections.json", "keypoints.h5", "keypoints.csv", "trajectory.png",
            "summary.json"} <= names

    # the jobs page and the node logs
    driver.find_element(By.LINK_TEXT, "Jobs").click()
    row = wait(driver, lambda d: d.find_element(By.CSS_SELECTOR, f"tr[data-id='{job_id}']"), 10, "the job row")
    assert "done" in row.text and "worker-1" in row.text and "100%" in row.text
    shot(driver, "jobs")
    driver.find_element(By.LINK_TEXT, "Node logs").click()
    wait(driver, lambda d: "worker-1" in d.find_element(By.TAG_NAME, "main").text, 10, "the node logs")
    assert "results in output/Red_fox_night/" in driver.find_element(By.TAG_NAME, "main").text
    shot(driver, "logs")

    # the old links still answer
    driver.get(f"{base}/plot/Red_fox_night")
    assert driver.execute_script("return document.images.length && document.images[0].naturalWidth") > 0
    no_console_errors(driver)

    # on a phone
    driver.set_window_size(390, 844)
    driver.get(f"{base}/jobs")
    wait(driver, lambda d: d.find_element(By.CSS_SELECTOR, f"tr[data-id='{job_id}']"), 10, "the job row")
    assert driver.execute_script("return document.documentElement.scrollWidth <= window.innerWidth + 1")
    shot(driver, "jobs-phone")
    driver.get(f"{base}/jobs/{job_id}")
    assert driver.execute_script("return document.documentElement.scrollWidth <= window.innerWidth + 1")
    shot(driver, "job-phone")


def test_refusals_show_in_the_page_and_jobs_update_live(browser, broker_settings, spawn, make_video, tmp_path):
    """No worker here: refused files get their reason next to them; a queued job appears without reload."""
    from selenium.webdriver.common.by import By
    settings, web, base = start_web(broker_settings, spawn)
    driver = browser
    fake = tmp_path / "notes.mp4"
    fake.write_bytes(b"this is a text file, not a video\n" * 20)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    login(driver, base)
    driver.find_element(By.ID, "files").send_keys(f"{fake}\n{text}")
    wait(driver, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#queue li")) == 2, 5, "both files listed")
    driver.find_element(By.ID, "upload-button").click()
    wait(driver, lambda d: "not an MP4 video" in d.find_element(By.ID, "queue").text, 15, "the refusal")
    assert "Not an MP4 file (.txt)" in driver.find_element(By.ID, "queue").text
    assert "/" == driver.current_url[len(base):] or driver.current_url.endswith("/")
    shot(driver, "upload-refused")
    assert [p.name for p in (settings.data / "input").iterdir()] == []

    # a job submitted by a script shows up on the open jobs page by itself
    driver.get(base + "/jobs")
    assert "No jobs yet" in driver.find_element(By.ID, "no-jobs").text
    api_upload(base, make_video("script.mp4"))
    wait(driver, lambda d: "script.mp4" in d.find_element(By.ID, "jobs").text, 10, "the new job, live")
    assert not driver.find_element(By.ID, "no-jobs").is_displayed()
    no_console_errors(driver, allow=("/api/jobs - Failed to load resource: the server responded with a status of 415",))


def test_upload_with_a_profile_and_a_deployment_and_download_a_camera_trap_data_package(browser, stack, make_video,
                                                                                       tmp_path):
    """A camera-trap user: add the deployment, upload a video recorded there with the species profile
    (giving its time, which the video does not hold), and take the finished job away as a Camtrap DP
    that validates. The worker loads that profile's pipeline (with its classifier) for this job."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    from kit.validators import camtrap_problems
    driver, base = browser, stack.base
    login(driver, base, "/deployments")
    for name, value in (("id", "cam7-dunes"), ("location_name", "Dune edge"), ("latitude", "52.1"),
                        ("longitude", "4.3"), ("deployment_start", "2026-05-01T06:00:00+02:00"),
                        ("deployment_end", "2026-05-20T18:00:00+02:00"), ("camera_model", "Browning BTC-8E")):
        driver.find_element(By.CSS_SELECTOR, f"#deployment-form input[name='{name}']").send_keys(value)
    driver.find_element(By.CSS_SELECTOR, "#deployment-form button[type=submit]").click()
    wait(driver, lambda d: "cam7-dunes" in d.find_element(By.ID, "deployments").text, 10, "the saved deployment")
    shot(driver, "deployments")

    driver.find_element(By.LINK_TEXT, "Upload").click()
    assert Select(driver.find_element(By.ID, "profile")).first_selected_option.get_attribute("value") == "camera-trap"
    Select(driver.find_element(By.ID, "profile")).select_by_value("camera-trap-serengeti")
    Select(driver.find_element(By.ID, "deployment")).select_by_value("cam7-dunes")
    driver.find_element(By.ID, "recorded_at").send_keys("2026-05-03T05:40:00+02:00")
    driver.find_element(By.ID, "files").send_keys(str(make_video("badger.mp4", frames=12)))
    driver.find_element(By.ID, "upload-button").click()
    wait(driver, lambda d: "/jobs/" in d.current_url, 30, "the job page")
    job_id = driver.current_url.rstrip("/").rsplit("/", 1)[1]
    wait(driver, lambda d: d.find_element(By.ID, "job-status").text in ("done", "failed"), 240, "the job to finish")
    assert driver.find_element(By.ID, "job-status").text == "done", stack.store.get(job_id).error
    driver.get(f"{base}/jobs/{job_id}")      # a page rendered done: its script has nothing left to reload
    wait(driver, lambda d: d.find_elements(By.ID, "camtrap-export"), 20, "the results")
    assert "cam7-dunes" in driver.find_element(By.ID, "job-deployment").text
    assert driver.find_element(By.ID, "job-profile").text.startswith("camera-trap-serengeti")
    job = stack.store.get(job_id)
    assert job.profile == "camera-trap-serengeti" and job.profile_settings["classifier"] == "AI4GSnapshotSerengeti"
    assert "2026-05-03T05:40:00+02:00 (given)" in driver.find_element(By.ID, "job-recorded").text

    driver.find_element(By.CSS_SELECTOR, "#camtrap-export summary").click()
    driver.find_element(By.CSS_SELECTOR, "#camtrap-export textarea[name=contributors]").send_keys(
        "A. Ranger <ranger@example.org>")
    Select(driver.find_element(By.CSS_SELECTOR, "#camtrap-export select[name=sampling_design]")).select_by_value(
        "targeted")
    shot(driver, "job-camtrap-export")
    driver.find_element(By.ID, "camtrap-export-button").click()
    downloads = driver.downloads
    wanted = "badger-camtrap-dp.zip"
    wait(driver, lambda d: (downloads / wanted).exists() and not any(p.suffix == ".crdownload"
                                                                    for p in downloads.iterdir()), 60, "the package")
    assert camtrap_problems((downloads / wanted).read_bytes(), tmp_path / "package") == []
    media = (tmp_path / "package" / "media.csv").read_text()
    assert "cam7-dunes" in media and "2026-05-03T05:40:00+02:00" in media and "badger.mp4" in media

    # the jobs page: tick the finished job, export it as a MegaDetector batch file
    driver.get(f"{base}/jobs")
    box = wait(driver, lambda d: d.find_element(By.CSS_SELECTOR, f"input[name=job][value='{job_id}']"), 10, "its box")
    box.click()
    Select(driver.find_element(By.ID, "export-format")).select_by_value("md-json")
    shot(driver, "jobs-export")
    driver.find_element(By.ID, "export-button").click()
    wait(driver, lambda d: (downloads / "badger-md-json.json").exists(), 30, "the batch file")
    from kit.validators import megadetector_problems
    assert megadetector_problems(downloads / "badger-md-json.json") == ([], [])
    no_console_errors(driver)
