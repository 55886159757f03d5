"""The application factory, settings, /healthz, /metrics, headers, static files and error pages."""
from __future__ import annotations

import os

import pytest

from webkit import PASSWORD, SECRET, TOKEN
from wildswarm.config import Settings
from wildswarm.errors import ConfigError
from wildswarm.web import create_app


def test_factory_reads_settings_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("WILDSWARM_DATA", str(tmp_path / "d"))
    monkeypatch.setenv("WILDSWARM_WEB_AUTH", "0")
    monkeypatch.setenv("WILDSWARM_WEB_MAX_UPLOAD_BYTES", "1234")
    app = create_app()
    assert app.config["WILDSWARM_SETTINGS"].data == tmp_path / "d"
    assert (tmp_path / "d" / "input").is_dir() and (tmp_path / "d" / "uploads").is_dir()
    assert app.config["MAX_CONTENT_LENGTH"] == 1234 + (1 << 20)
    assert app.test_client().get("/").status_code == 200      # no login needed: access control off


def test_auth_on_without_credentials_refuses_to_start(tmp_path):
    with pytest.raises(ConfigError, match="WILDSWARM_WEB_PASSWORD.*WILDSWARM_WEB_AUTH=0"):
        create_app(Settings(data=tmp_path, web_secret_key=SECRET))


def test_auth_on_without_secret_key_refuses_to_start(tmp_path):
    with pytest.raises(ConfigError, match="WILDSWARM_WEB_SECRET_KEY"):
        create_app(Settings(data=tmp_path, web_password=PASSWORD))
    with pytest.raises(ConfigError, match="at least 16"):
        create_app(Settings(data=tmp_path, web_token=TOKEN, web_secret_key="short"))


def test_secrets_come_from_files(tmp_path):
    (tmp_path / "pw").write_text(PASSWORD + "\n")
    (tmp_path / "key").write_text(SECRET + "\n")
    s = Settings.from_env({"WILDSWARM_DATA": str(tmp_path / "d"), "WILDSWARM_WEB_PASSWORD_FILE": str(tmp_path / "pw"),
                           "WILDSWARM_WEB_SECRET_KEY_FILE": str(tmp_path / "key")})
    app = create_app(s)
    assert app.secret_key == SECRET and s.web_password == PASSWORD


def test_no_secret_in_the_code():
    import wildswarm.web as web
    root = os.path.dirname(web.__file__)
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            if name.endswith((".py", ".html", ".js")):
                text = open(os.path.join(dirpath, name), encoding="utf-8").read()
                assert PASSWORD not in text and TOKEN not in text and SECRET not in text


def test_healthz_tells_a_stranger_only_whether_each_part_works(anon, openapi):
    """Audit: /healthz is open through the proxy (it is the containers' healthcheck), and told anyone the
    data root's path, the free disk space, and the job store's and broker's raw error texts; and each
    anonymous hit read up to 1000 job rows. A stranger now gets the verdicts only."""
    r = anon.get("/healthz")
    assert r.status_code == 200
    openapi.check("GET", "/healthz", r)
    assert r.get_json() == {"status": "ok", "data": {"writable": True}, "store": {"reachable": True},
                            "broker": {"reachable": r.get_json()["broker"]["reachable"]}}


def test_healthz_reports_a_writable_root_and_the_broker(app, bearer, openapi):
    r = app.test_client().get("/healthz", headers=bearer)
    assert r.status_code == 200
    openapi.check("GET", "/healthz", r)
    body = r.get_json()
    assert body["data"]["writable"] is True and body["store"]["reachable"] is True
    assert isinstance(body["broker"]["reachable"], bool) and body["broker"]["pending_jobs"] == 0


def test_healthz_reports_a_full_disk_but_stays_healthy(make_app, settings, tmpfs, openapi, bearer):
    """Audit: a full disk made /healthz 503, so Swarm restarted the web task in a loop (cutting off the
    uploads in flight and the pages that say what is wrong). Now it reports and stays 200."""
    c = make_app(data=tmpfs.path / "data").test_client()
    c.environ_base["HTTP_AUTHORIZATION"] = bearer["Authorization"]
    tmpfs.fill()
    r = c.get("/healthz")
    assert r.status_code == 200
    openapi.check("GET", "/healthz", r)
    body = r.get_json()
    assert body["status"] == "degraded" and body["data"]["writable"] is False
    assert "No space left" in body["data"]["error"] and body["data"]["free_bytes"] == 0
    tmpfs.unfill()
    tmpfs.read_only()
    body = c.get("/healthz").get_json()
    assert body["data"]["error"].endswith("Read-only file system") and body["status"] == "degraded"
    tmpfs.read_write()
    assert c.get("/healthz").get_json()["data"]["writable"] is True


def test_healthz_reports_a_job_store_that_is_down(make_app, settings, openapi, bearer):
    from wildswarm.jobs import JobStore
    from wildswarm.jobs.db import Database
    from wildswarm.web import create_app
    s = settings.replace(db_port=1, db_timeout_seconds=0.5)
    c = create_app(s, store=JobStore(Database(s))).test_client()
    r = c.get("/healthz", headers=bearer)
    assert r.status_code == 200
    openapi.check("GET", "/healthz", r)
    assert r.get_json()["store"]["reachable"] is False and r.get_json()["status"] == "degraded"


def test_healthz_really_writes(tmp_path):
    import wildswarm.web.ops as ops
    assert ops._writable(tmp_path) is None
    assert ops._writable(tmp_path / "absent") is not None
    assert list(tmp_path.iterdir()) == []


def test_metrics_are_prometheus_text_with_web_names(client, anon, video_bytes):
    from webkit import upload
    upload(client, "m.mp4", video_bytes, csrf=client.csrf)
    upload(client, "m.txt", b"hello", csrf=client.csrf)
    r = anon.get("/metrics")
    assert r.status_code == 200 and r.mimetype == "text/plain"
    text = r.get_data(as_text=True)
    assert 'wildswarm_web_requests_total{code="200",endpoint="ui.index",method="GET"}' in text
    assert 'wildswarm_web_uploads_refused_total{reason="bad_type"}' in text
    assert 'wildswarm_web_uploads_total{result="queued"}' in text
    assert "wildswarm_web_upload_bytes_total" in text
    assert "wildswarm_web_request_duration_seconds_bucket" in text
    assert "/jobs/" not in text and "m.mp4" not in text      # no URL or file name ever becomes a label


def test_a_client_inventing_http_methods_adds_no_metric_per_method(anon):
    """Audit: the request counter was labelled with the request's method as sent. A method is any token
    (nginx and gunicorn pass ``ABCD`` on, and the guard answers it with a 401, counted like any answer),
    so anyone who can reach the login page added a time series per made-up method: the web app's memory,
    its /metrics and Prometheus's series grew with every new one, without a login. Methods the app does
    not route are counted as ``other``."""
    def series() -> set[str]:
        text = anon.get("/metrics").get_data(as_text=True)
        return {line.split(" ")[0] for line in text.splitlines() if line.startswith("wildswarm_web_requests_total{")}

    assert anon.open("/", method="PROPFIND").status_code in (302, 401, 405)
    before = series()
    for n in range(100):
        assert anon.open("/", method=f"X{n:04d}").status_code in (302, 401, 405)
    added = series() - before
    assert len(added) <= 2, sorted(added)[:5]
    assert not any("X00" in s for s in added)
    assert any('method="GET"' in s for s in series())        # the methods the app routes keep their names


def test_unknown_urls_are_404_pages_and_json_for_the_api(client):
    r = client.get("/no/such/page")
    assert r.status_code == 404 and b"404" in r.data and r.mimetype == "text/html"
    r = client.get("/api/nothing")
    assert r.status_code == 404 and r.get_json()["reason"] == "not_found"


def test_security_headers_and_no_external_resources(client):
    r = client.get("/")
    csp = r.headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp
    assert r.headers["X-Content-Type-Options"] == "nosniff" and r.headers["X-Frame-Options"] == "DENY"
    page = r.get_data(as_text=True)
    assert "http://" not in page.replace(r.request.host_url, "") and "https://" not in page


def test_no_page_behind_the_login_is_kept_in_the_browser_s_cache(client, store, video_bytes):
    """Audit: only the ui and auth blueprints' answers said Cache-Control: no-store. The pages added in other
    blueprints (the deployments page with each camera's coordinates, the cluster page, the old results listing,
    the bulk delete's confirmation) were kept in the browser's cache, where the back button or the next user
    of a shared browser saw them after logging out. Every HTML page now says no-store."""
    from webkit import make_done_job
    done = make_done_job(store, video_bytes)
    client.post("/api/deployments", json={"id": "cam7", "latitude": -1.4, "longitude": 35.0},
                headers={"X-CSRF-Token": client.csrf})
    pages = {"/deployments": client.get("/deployments"), "/cluster": client.get("/cluster"),
             "/output/fox?list=1": client.get("/output/fox?list=1"),
             "bulk delete": client.post("/jobs/bulk", data={"action": "delete", "job": done.id,
                                                            "csrf_token": client.csrf})}
    for what, r in pages.items():
        assert r.status_code == 200 and r.mimetype == "text/html", what
        assert r.headers.get("Cache-Control") == "no-store", (what, r.headers.get("Cache-Control"))


@pytest.mark.parametrize("path", ["/static/style.css", "/static/app.js", "/static/favicon.svg"])
def test_static_files(anon, path):
    r = anon.get(path)
    assert r.status_code == 200 and len(r.data) > 100
    loads = r.data.replace(b'xmlns="http://www.w3.org/2000/svg"', b"")     # a namespace name, not a load
    assert b"http://" not in loads and b"https://" not in loads


def test_every_link_on_every_page_answers(client, settings, store, video_bytes):
    """No broken links: follow each href/src of each page (same site) and expect a 2xx/3xx."""
    import re

    from webkit import make_done_job, make_failed_job
    done = make_done_job(store, video_bytes)
    failed = make_failed_job(store, video_bytes)
    settings_layout = settings.data / "logs"
    (settings_layout / "worker-1.log").write_text("2026-01-01 10:00:00 worker-1 job 00c0ffee00c0ffee: started\n")
    pages = ["/", "/jobs", f"/jobs/{done.id}", f"/jobs/{failed.id}", "/logs", "/logs/worker-1", "/output/fox?list=1"]
    seen = set()
    for page in pages:
        r = client.get(page)
        assert r.status_code == 200, page
        for link in re.findall(r'(?:href|src)="([^"#]+)"', r.get_data(as_text=True)):
            link = link.replace("&amp;", "&")
            if link in seen or not link.startswith("/"):
                continue
            seen.add(link)
            answer = client.get(link)
            assert answer.status_code in (200, 206, 301, 302, 303), f"{page} links to {link}: {answer.status_code}"
    assert {"/static/style.css", "/api/openapi.json", "/healthz", f"/jobs/{done.id}/outputs.zip"} <= seen
