"""The jobs page in real Chromium against a real ``wildswarm web``: tick videos and cancel them in one go,
filter, retry every job the filter matches, delete after the confirmation, page through, switch to the
grid of results, and use both on a phone. Screenshots: jobs-bulk-cancelled.png, jobs-bulk-delete.png,
jobs-grid.png, jobs-list-phone.png, jobs-grid-phone.png."""
from __future__ import annotations

import time

from kit.procs import start_web
from test_browser import PASSWORD, SECRET, TOKEN, api_upload, login, no_console_errors, shot, wait


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

    # filter the cancelled ones, and retry every job the filter matches
    Select(driver.find_element(By.CSS_SELECTOR, "#filters select[name=status]")).select_by_value("cancelled")
    driver.find_element(By.CSS_SELECTOR, "#filters button[type=submit]").click()
    wait(driver, lambda d: "status=cancelled" in d.current_url and
         len(d.find_elements(By.CSS_SELECTOR, "#jobs tbody tr")) == 2, 10, "the filtered listing")
    driver.find_element(By.ID, "bulk-all").click()
    Select(driver.find_element(By.ID, "bulk-action")).select_by_value("retry")
    driver.find_element(By.ID, "bulk-button").click()
    wait(driver, lambda d: "2 of 2 job(s) queued again" in d.find_element(By.TAG_NAME, "main").text, 10,
         "the bulk retry's report")
    assert all(store.get(j).status.value == "queued" for j in ids)

    # cancel one, then delete it: the confirmation says what goes first
    driver.get(base + "/jobs")
    for action in ("cancel", "delete"):
        wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, f'#jobs tr[data-id="{ids[2]}"]'), 10, "the job")
        driver.find_element(By.CSS_SELECTOR, f'#jobs tr[data-id="{ids[2]}"] input[name=job]').click()
        Select(driver.find_element(By.ID, "bulk-action")).select_by_value(action)
        driver.find_element(By.ID, "bulk-button").click()
        if action == "cancel":
            wait(driver, lambda d: "1 of 1 job(s) cancelled" in d.find_element(By.TAG_NAME, "main").text, 10,
                 "the cancel")
    wait(driver, lambda d: d.find_element(By.ID, "confirm-delete").is_displayed(), 10, "the confirmation")
    assert "cam2.mp4" in driver.find_element(By.ID, "confirm-delete").text
    shot(driver, "jobs-bulk-delete")
    driver.find_element(By.ID, "confirm-button").click()
    wait(driver, lambda d: "1 of 1 job(s) deleted" in d.find_element(By.TAG_NAME, "main").text, 10, "the delete")
    assert store.find(ids[2]) is None

    # page through, one job a page, oldest first
    driver.get(base + "/jobs?order=oldest&limit=1")
    first = driver.find_element(By.CSS_SELECTOR, "#jobs tbody tr").get_attribute("data-id")
    driver.find_element(By.ID, "next").click()
    wait(driver, lambda d: "offset=1" in d.current_url, 10, "the next page")
    assert driver.find_element(By.CSS_SELECTOR, "#jobs tbody tr").get_attribute("data-id") not in (first, None)
    assert [first] == ids[:1] and "order=oldest" in driver.current_url

    driver.get(base + "/jobs")
    driver.find_element(By.ID, "view-grid").click()
    wait(driver, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#results-grid li.result")) == 2, 10, "the grid")
    assert "view=grid" in driver.current_url
    shot(driver, "jobs-grid")

    driver.set_window_size(390, 844)                       # a phone
    for path, name in (("/jobs", "jobs-list-phone"), ("/jobs?view=grid", "jobs-grid-phone")):
        driver.get(base + path)
        wait(driver, lambda d: d.find_element(By.ID, "filters").is_displayed(), 10, f"{path} on a phone")
        width = driver.execute_script("return document.documentElement.scrollWidth")
        assert width <= 390, f"{path} is {width} px wide on a 390 px screen"
        shot(driver, name)
    no_console_errors(driver)


def test_the_live_first_page_keeps_its_order_when_an_older_job_changes(browser, broker_settings, store, spawn,
                                                                       make_video):
    """A change to a job further down the list (a worker starting the oldest queued video, a retry) updates
    nothing on the live first page: it is not a new job, so it must not be added at the top and push the
    newest jobs out of the page."""
    from selenium.webdriver.common.by import By
    settings, web, base = start_web(broker_settings, spawn, password=PASSWORD, secret=SECRET, token=TOKEN)
    ids = [api_upload(base, make_video(f"cam{k}.mp4", frames=4 + k)) for k in range(3)]   # no worker: queued
    driver = browser
    login(driver, base, "/jobs?limit=2")
    shown = lambda d: [tr.get_attribute("data-id") for tr in d.find_elements(By.CSS_SELECTOR, "#jobs tbody tr")]
    wait(driver, lambda d: shown(d) == [ids[2], ids[1]], 10, "the two newest jobs")
    store.cancel(ids[0], "cancelled by the test")        # the oldest, on the second page, changes
    wait(driver, lambda d: d.find_element(By.ID, "refreshed").text.startswith("Updated"), 10, "a poll")
    time.sleep(4.5)                                       # two more polls
    assert shown(driver) == [ids[2], ids[1]]
    new = api_upload(base, make_video("cam3.mp4", frames=8))        # a job made now still comes in at the top
    wait(driver, lambda d: shown(d) == [new, ids[2]], 10, "the new job at the top")
    no_console_errors(driver)


def test_a_job_deleted_elsewhere_leaves_the_open_jobs_page(browser, broker_settings, store, spawn, make_video):
    """Audit: a job deleted by someone else (another tab, a colleague, the CLI) stayed on every open jobs page
    as it was, a link to a 404, until the page was reloaded."""
    from selenium.webdriver.common.by import By
    settings, web, base = start_web(broker_settings, spawn, password=PASSWORD, secret=SECRET, token=TOKEN)
    ids = [api_upload(base, make_video(f"cam{k}.mp4", frames=4 + k)) for k in range(2)]   # no worker: queued
    driver = browser
    login(driver, base, "/jobs")
    shown = lambda d: [tr.get_attribute("data-id") for tr in d.find_elements(By.CSS_SELECTOR, "#jobs tbody tr")]
    wait(driver, lambda d: shown(d) == [ids[1], ids[0]], 10, "both jobs")
    store.cancel(ids[0], "cancelled by the test")
    store.delete(ids[0])
    wait(driver, lambda d: shown(d) == [ids[1]], 10, "the deleted job to leave the page")
    store.cancel(ids[1], "cancelled by the test")
    store.delete(ids[1])
    wait(driver, lambda d: shown(d) == [] and d.find_element(By.ID, "no-jobs").is_displayed(), 10,
         "the page to say there are no jobs")
    no_console_errors(driver)


def test_the_live_pages_say_when_the_login_has_expired(browser, broker_settings, store, spawn, make_video):
    """Once the login has expired every poll is refused (401): the jobs page and a job's page must say so,
    not go on showing their last figures as if they were current, while polling in vain."""
    from selenium.webdriver.common.by import By
    settings, web, base = start_web(broker_settings, spawn, password=PASSWORD, secret=SECRET, token=TOKEN)
    job_id = api_upload(base, make_video("cam0.mp4", frames=4))          # no worker: queued, so polled
    driver = browser
    for path in ("/jobs", f"/jobs/{job_id}", "/cluster"):
        login(driver, base, path)
        wait(driver, lambda d: d.find_elements(By.ID, "job") or d.find_elements(By.ID, "jobs")
             or d.find_elements(By.ID, "cluster-live"), 10, path)
        driver.delete_all_cookies()                                       # the session is gone
        wait(driver, lambda d: "login has expired" in d.find_element(By.TAG_NAME, "main").text, 10,
             f"{path} to say that the login has expired")
    no_console_errors(driver, allow=("401",))


def test_the_page_of_a_job_deleted_meanwhile_says_so_and_stops_polling(browser, broker_settings, store, spawn,
                                                                        make_video):
    """A queued job's page polls its job; deleted (by someone else, from the jobs page), every poll is a 404:
    the page must say the job is gone, not sit on "queued" while asking in vain every 2 seconds."""
    from selenium.webdriver.common.by import By
    settings, web, base = start_web(broker_settings, spawn, password=PASSWORD, secret=SECRET, token=TOKEN)
    job_id = api_upload(base, make_video("cam0.mp4", frames=4))          # no worker: queued, so polled
    driver = browser
    login(driver, base, f"/jobs/{job_id}")
    wait(driver, lambda d: d.find_elements(By.ID, "job"), 10, "the job's page")
    store.cancel(job_id, "cancelled by the test")        # and deleted at once (as a colleague might, while
    store.delete(job_id)                                 # this tab sat in the background, not polling)
    wait(driver, lambda d: "job has been deleted" in d.find_element(By.TAG_NAME, "main").text, 10,
         "the page to say that its job is gone")
    no_console_errors(driver, allow=("404",))
