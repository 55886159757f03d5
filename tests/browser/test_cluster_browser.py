"""The cluster page in real Chromium against a real ``wildswarm web`` and two real workers: one runs a
job, the other is stopped while the page is open and the page says so by itself; Prometheus does not
answer, and the page says that too. The chart is drawn with the Chart.js the app serves. Screenshots:
test-artifacts/screenshots/cluster.png and cluster-phone.png."""
from __future__ import annotations

from kit.net import free_port
from kit.observe import wait_consuming
from kit.procs import start_web
from test_browser import PASSWORD, SECRET, TOKEN, login, no_console_errors, shot, wait
from wildswarm.producer import submit_file
from wildswarm.testing import write_clip


def test_the_cluster_page_follows_two_workers_as_one_is_stopped(browser, broker_settings, spawn, intake, tmp_path):
    from selenium.webdriver.common.by import By
    s = broker_settings.replace(worker_heartbeat_seconds=0.5)
    workers = [spawn(s, "worker", node=f"node-{i}") for i in (1, 2)]
    wait_consuming(s, 2, workers)
    settings, web, base = start_web(s, spawn, password=PASSWORD, secret=SECRET, token=TOKEN,
                                    prometheus_url=f"http://127.0.0.1:{free_port()}/prometheus")
    job = submit_file(intake, write_clip(tmp_path / "long.mp4", seconds=120, frames=1200)).job
    driver = browser
    login(driver, base, "/cluster")
    rows = lambda d: {tr.get_attribute("data-owner").split("/")[0]: tr.get_attribute("class")  # noqa: E731
                      for tr in d.find_elements(By.CSS_SELECTOR, "#workers tr.worker")}
    wait(driver, lambda d: sorted(rows(d).values()) == ["worker idle", "worker running"], 30,
         "one worker running the job, the other idle")
    running = driver.find_element(By.CSS_SELECTOR, "#workers tr.worker.running")
    assert running.find_element(By.LINK_TEXT, "long.mp4").get_attribute("href").endswith(f"/jobs/{job.id}")
    assert "does not answer" in driver.find_element(By.ID, "prometheus-down").text
    assert driver.find_element(By.ID, "alive").text == "2"
    assert driver.find_element(By.ID, "q-running").text == "1"
    wait(driver, lambda d: d.find_element(By.ID, "throughput-chart").get_attribute("data-drawn") == "1", 10,
         "the chart, drawn with the app's own Chart.js")
    shot(driver, "cluster")

    idle = next(node for node, cls in rows(driver).items() if cls == "worker idle")
    workers[int(idle[-1]) - 1].stop()
    wait(driver, lambda d: rows(d).get(idle) == "worker stopped", 20, "the stopped worker, without a reload")
    assert driver.find_element(By.ID, "alive").text == "1"
    assert "frames to analyse" in driver.find_element(By.ID, "cluster-summary").text

    driver.set_window_size(390, 844)                       # a phone
    driver.refresh()
    wait(driver, lambda d: d.find_element(By.ID, "workers").is_displayed(), 10, "the page on a phone")
    width = driver.execute_script("return document.documentElement.scrollWidth")
    assert width <= 390, f"the page is {width} px wide on a 390 px screen"
    shot(driver, "cluster-phone")
    no_console_errors(driver)
