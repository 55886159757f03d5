"""The jobs page in real Chromium against a real ``wildswarm web``: tick videos and cancel them in one go,
switch to the grid of results, and use both on a phone. Screenshots: jobs-bulk-cancelled.png,
jobs-grid.png, jobs-phone.png, jobs-grid-phone.png."""
from __future__ import annotations

import urllib.request

from kit.procs import start_web
from test_browser import PASSWORD, SECRET, TOKEN, login, no_console_errors, shot, wait


def api_upload(base: str, video) -> str:
    import json
    boundary = "wsBoundary42"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{video.name}\"\r\n\r\n"
            ).encode() + video.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    req = urllib.request.Request(base + "/api/jobs", data=body, headers={
        "Authorization": f"Bearer {TOKEN}", "Content-Type": f"multipart/form-data; boundary={boundary}"})
    with urllib.request.urlopen(req, timeout=20) as r:
        return json.loads(r.read())["job"]["id"]


def test_tick_and_cancel_then_the_grid_and_the_phone(browser, broker_settings, store, spawn, make_video):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select
    settings, web, base = start_web(broker_settings, spawn, password=PASSWORD, secret=SECRET, token=TOKEN)
    ids = [api_upload(base, make_video(f"cam{k}.mp4", frames=4 + k)) for k in range(3)]   # no worker: queued
    driver = browser
    login(driver, base, "/jobs")
    wait(driver, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#jobs tbody tr")) == 3, 10, "three jobs")
    for job_id in ids[:2]:
        driver.find_element(By.CSS_SELECTOR, f'#jobs tr[data-id="{job_id}"] input[name=job]').click()
    Select(driver.find_element(By.ID, "bulk-action")).select_by_value("cancel")
    driver.find_element(By.ID, "bulk-button").click()
    wait(driver, lambda d: "2 of 2 job(s) cancelled" in d.find_element(By.TAG_NAME, "main").text, 10,
         "the bulk cancel's report")
    statuses = {j: store.get(j).status.value for j in ids}
    assert statuses == {ids[0]: "cancelled", ids[1]: "cancelled", ids[2]: "queued"}
    assert "cancelled" in driver.find_element(By.CSS_SELECTOR, f'#jobs tr[data-id="{ids[0]}"]').text
    shot(driver, "jobs-bulk-cancelled")

    driver.find_element(By.ID, "view-grid").click()
    wait(driver, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#results-grid li.result")) == 3, 10, "the grid")
    assert "view=grid" in driver.current_url
    shot(driver, "jobs-grid")

    driver.set_window_size(390, 844)                       # a phone
    for path, name in (("/jobs", "jobs-phone"), ("/jobs?view=grid", "jobs-grid-phone")):
        driver.get(base + path)
        wait(driver, lambda d: d.find_element(By.ID, "filters").is_displayed(), 10, f"{path} on a phone")
        width = driver.execute_script("return document.documentElement.scrollWidth")
        assert width <= 390, f"{path} is {width} px wide on a 390 px screen"
        shot(driver, name)
    no_console_errors(driver)
