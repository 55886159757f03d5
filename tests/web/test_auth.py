"""Access control: login form, bearer token, CSRF, redirects, and access control turned off."""
from __future__ import annotations

import re

import pytest

from webkit import PASSWORD, TOKEN, csrf_of, upload

PROTECTED = ["/", "/jobs", "/logs", "/jobs/00c0ffee00c0ffee", "/output/fox", "/plot/fox", "/logs/w1"]
OPEN = ["/login", "/healthz", "/metrics", "/api/openapi.json", "/static/style.css", "/favicon.ico"]


@pytest.mark.parametrize("path", PROTECTED)
def test_pages_redirect_to_login(anon, path):
    r = anon.get(path)
    assert r.status_code == 302
    assert r.headers["Location"].startswith("/login?next=")


@pytest.mark.parametrize("path", ["/api/jobs", "/api/jobs/00c0ffee00c0ffee", "/api/jobs/00c0ffee00c0ffee/outputs.zip"])
def test_api_needs_a_token(anon, path, openapi):
    r = anon.get(path)
    assert r.status_code == 401 and r.get_json()["reason"] == "unauthorized"
    assert r.headers["WWW-Authenticate"].startswith("Bearer")


def test_upload_without_login_is_refused_and_nothing_is_written(anon, settings, video_bytes):
    r = upload(anon, "a.mp4", video_bytes)
    assert r.status_code == 401
    r = upload(anon, "a.mp4", video_bytes, field="files", url="/upload")
    assert r.status_code == 302
    assert list((settings.data / "input").iterdir()) == []


@pytest.mark.parametrize("path", OPEN)
def test_open_paths(anon, path):
    assert anon.get(path).status_code == 200


def test_login_logout_round_trip(anon):
    token = csrf_of(anon)
    r = anon.post("/login", data={"user": "wildswarm", "password": PASSWORD, "csrf_token": token,
                                  "next": "/jobs"})
    assert r.status_code == 302 and r.headers["Location"] == "/jobs"
    assert anon.get("/jobs").status_code == 200
    r = anon.post("/logout", data={"csrf_token": csrf_of(anon)})
    assert r.status_code == 302
    assert anon.get("/jobs").status_code == 302


@pytest.mark.parametrize("user,password", [("wildswarm", "wrong"), ("someone", PASSWORD), ("", ""),
                                           ("wildswarm", PASSWORD + "x")])
def test_wrong_credentials(anon, user, password):
    r = anon.post("/login", data={"user": user, "password": password, "csrf_token": csrf_of(anon)})
    assert r.status_code == 401 and b"Wrong user name or password" in r.data
    assert anon.get("/jobs").status_code == 302


def test_the_token_is_not_a_password(anon):
    """Audit: the API token was accepted as the password for any user name."""
    r = anon.post("/login", data={"user": "anyone", "password": TOKEN, "csrf_token": csrf_of(anon)})
    assert r.status_code == 401
    r = anon.post("/login", data={"user": "wildswarm", "password": TOKEN, "csrf_token": csrf_of(anon)})
    assert r.status_code == 401 and anon.get("/jobs").status_code == 302


def login(client, password: str = PASSWORD, user: str = "wildswarm", **environ):
    return client.post("/login", data={"user": user, "password": password, "csrf_token": csrf_of(client)},
                       environ_base=environ)


def test_logout_ends_the_session_for_every_copy_of_its_cookie(app):
    """Audit: a session cookie copied before logout still worked for 12 h."""
    browser, thief = app.test_client(), app.test_client()
    assert login(browser).status_code == 302
    stolen = browser.get_cookie("wildswarm_session").value
    thief.set_cookie("wildswarm_session", stolen)
    assert thief.get("/jobs").status_code == 200                 # the copy works while the session lives
    browser.post("/logout", data={"csrf_token": csrf_of(browser)})
    assert browser.get("/jobs").status_code == 302
    assert thief.get("/jobs").status_code == 302                 # ... and not after the logout
    assert thief.get("/api/jobs").status_code == 401


def test_logging_in_again_ends_the_session_the_browser_had(app):
    """Audit: a login from a browser already logged in opened a new server session and left the old one
    alive for the rest of its 12 h: a copy of the old cookie went on working."""
    browser, thief = app.test_client(), app.test_client()
    assert login(browser).status_code == 302
    thief.set_cookie("wildswarm_session", browser.get_cookie("wildswarm_session").value)
    assert thief.get("/jobs").status_code == 200
    assert login(browser).status_code == 302 and browser.get("/jobs").status_code == 200
    assert thief.get("/jobs").status_code == 302 and thief.get("/api/jobs").status_code == 401


def test_a_new_password_ends_the_sessions_opened_with_the_old_one(make_app):
    """Audit: a copied cookie survived a password change."""
    client = make_app().test_client()
    assert login(client).status_code == 302
    cookie = client.get_cookie("wildswarm_session").value
    after = make_app(web_password="a brand new password").test_client()      # the app restarted with it
    after.set_cookie("wildswarm_session", cookie)
    assert after.get("/jobs").status_code == 302
    assert login(after, "a brand new password").status_code == 302 and after.get("/jobs").status_code == 200


def test_guessing_passwords_is_throttled(make_app):
    """Audit: 200 wrong passwords took 0.47 s. After a few failures a client is refused for a while,
    even with the right password; another client is not."""
    app = make_app(web_login_max_failures=3, web_login_lock_seconds=1)
    attacker, other = app.test_client(), app.test_client()
    codes = [login(attacker, f"guess {i}", REMOTE_ADDR="203.0.113.7").status_code for i in range(6)]
    assert codes[:3] == [401, 401, 401] and set(codes[3:]) == {429}
    locked = login(attacker, PASSWORD, REMOTE_ADDR="203.0.113.7")
    assert locked.status_code == 429 and int(locked.headers["Retry-After"]) >= 1
    assert b"Too many failed logins" in locked.data
    assert login(other, PASSWORD, REMOTE_ADDR="198.51.100.2").status_code == 302     # someone else: fine
    import time
    time.sleep(int(locked.headers["Retry-After"]) + 0.5)
    assert login(attacker, PASSWORD, REMOTE_ADDR="203.0.113.7").status_code == 302   # the lock runs out


def test_guessing_one_user_from_many_addresses_is_throttled_too(make_app):
    app = make_app(web_login_max_failures=2, web_login_lock_seconds=30)
    c = app.test_client()
    codes = [login(c, f"guess {i}", REMOTE_ADDR=f"203.0.113.{i}").status_code for i in range(12)]
    assert codes[:8] == [401] * 8 and codes[8:] == [429] * 4          # 4 x the per-address limit per user


def test_guessing_the_api_token_is_throttled_like_the_password(make_app):
    """Audit: only the login form counted failures. A wrong bearer token was never counted, so the token (which
    opens as much as the password) could be guessed as fast as the app answers: on any API call, or on the
    proxy's /auth/check. Now wrong tokens count against the client's address like wrong passwords, and a locked
    address is refused even with the right token (else the lock would tell a guesser when it guessed right)."""
    app = make_app(web_login_max_failures=3, web_login_lock_seconds=30)
    c = app.test_client()

    def guess(token: str, path: str = "/api/jobs", address: str = "203.0.113.7"):
        return c.get(path, headers={"Authorization": f"Bearer {token}"}, environ_base={"REMOTE_ADDR": address})
    codes = [guess(f"guess-{i}").status_code for i in range(5)]
    assert codes[:3] == [401, 401, 401] and set(codes[3:]) == {429}
    locked = guess(TOKEN)
    assert locked.status_code == 429 and int(locked.headers["Retry-After"]) >= 1
    assert locked.get_json()["reason"] == "too_many_requests"
    assert guess(TOKEN, "/auth/check").status_code == 401           # the proxy's question: no way round the lock
    assert guess(TOKEN, address="198.51.100.2").status_code == 200     # another client's right token: fine
    assert guess(TOKEN, "/auth/check", "198.51.100.2").status_code == 204


def test_wrong_passwords_and_wrong_tokens_lock_each_their_own_way_in(make_app):
    """The token's lock counted the login form's failures too: someone mistyping the password behind a lab's
    one address (or the stack's own throttling test) made every script's right token a 429 from there. Each
    way in counts its own failures: the login form's lock leaves the token alone, and the token's the form."""
    app = make_app(web_login_max_failures=3, web_login_lock_seconds=30)
    c = app.test_client()
    here = {"REMOTE_ADDR": "203.0.113.7"}
    assert {login(c, f"guess {i}", **here).status_code for i in range(5)} == {401, 429}
    assert login(c, PASSWORD, **here).status_code == 429                      # the form is locked here
    right = c.get("/api/jobs", headers={"Authorization": f"Bearer {TOKEN}"}, environ_base=here)
    assert right.status_code == 200                                            # the token is not
    other = {"REMOTE_ADDR": "198.51.100.2"}
    codes = {c.get("/api/jobs", headers={"Authorization": f"Bearer guess-{i}"}, environ_base=other).status_code
             for i in range(5)}
    assert codes == {401, 429}                                                 # the token is locked there
    assert login(app.test_client(), PASSWORD, **other).status_code == 302     # the form is not


def test_forgotten_login_failures_do_not_pile_up_in_the_job_store(make_app, store):
    """Failures older than the window are forgotten, but their rows stayed for ever: anyone (no login needed)
    grew login_failures by a row or two for every wrong login under a new user name or from a new address."""
    import time
    app = make_app(web_login_max_failures=3, web_login_lock_seconds=1, web_login_window_seconds=1)
    c = app.test_client()
    for i in range(20):
        assert login(c, "wrong", user=f"guess-{i}", REMOTE_ADDR=f"203.0.113.{i}").status_code == 401
    time.sleep(1.5)                                         # the window passes: every one of them is forgotten
    assert login(c, "wrong", user="one-more", REMOTE_ADDR="198.51.100.9").status_code == 401
    with store.db.connection() as conn:
        left = conn.execute("SELECT count(*) AS n FROM login_failures").fetchone()["n"]
    assert left == 2                                        # the last failure's address and user name only


def test_the_proxys_auth_check_answers_from_headers_alone(app, client, bearer):
    anon = app.test_client()
    assert anon.get("/auth/check").status_code == 401
    assert anon.get("/auth/check", headers=bearer).status_code == 204
    assert client.get("/auth/check").status_code == 204
    r = anon.post("/auth/check", data={"x": "y" * 1000})
    assert r.status_code in (401, 405)


def test_the_auth_check_gives_the_proxy_a_login_address_that_keeps_the_whole_query(anon):
    """Audit: the proxy sent a request without a login to ``/login?next=$request_uri`` as it came, so a
    console address with a query of several parts (``/prometheus/graph?g0.expr=up&g0.tab=1``) came back after
    the login cut at its first ``&``. The app's answer to the proxy's question now carries the login address
    with ``next`` encoded (X-Login-Location), which the proxy redirects to."""
    from urllib.parse import parse_qs, urlsplit
    target = "/prometheus/graph?g0.expr=rate(x%5B5m%5D)&g0.tab=1&g0.range_input=1h#frag"
    r = anon.get("/auth/check", headers={"X-Original-URI": target})
    assert r.status_code == 401
    location = urlsplit(r.headers["X-Login-Location"])
    assert location.path == "/login" and parse_qs(location.query) == {"next": [target]}
    for odd in ("", "relative", "//evil.example/x"):                 # never a way off the site
        assert anon.get("/auth/check", headers={"X-Original-URI": odd}).headers["X-Login-Location"] == "/login"
    r = anon.post("/login", data={"user": "wildswarm", "password": PASSWORD, "csrf_token": csrf_of(anon),
                                  "next": parse_qs(location.query)["next"][0]})
    assert r.status_code == 302 and r.headers["Location"] == target
    assert "X-Login-Location" not in anon.get("/auth/check", headers={"X-Original-URI": target}).headers


def test_login_form_needs_its_csrf_token(anon):
    anon.get("/login")
    r = anon.post("/login", data={"user": "wildswarm", "password": PASSWORD, "csrf_token": "forged"})
    assert r.status_code == 400 and b"expired" in r.data


@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example/x", "/\\evil.example", "javascript:x"])
def test_login_never_redirects_off_site(anon, target):
    r = anon.post("/login", data={"user": "wildswarm", "password": PASSWORD, "csrf_token": csrf_of(anon),
                                  "next": target})
    assert r.status_code == 302 and r.headers["Location"] == "/"


@pytest.mark.parametrize("form, lands_on", [("/upload", "/"), ("/logout", "/"), ("/jobs/bulk", "/jobs"),
                                             ("/jobs/00c0ffee00c0ffee/retry", "/jobs/00c0ffee00c0ffee")])
def test_a_form_sent_after_the_login_expired_lands_on_a_page_after_logging_in_not_a_405(anon, form, lands_on):
    """Audit: a form sent once the login had expired (the upload form left open past the 12 h of a login, the
    Log out button of a stale page) was sent to /login?next=<the form's address> (by the app, and for /upload
    by the proxy), an address only POST opens: after logging in the browser was sent there with GET and met
    '405 Method Not Allowed'. It now lands on the page above it."""
    import html
    r = anon.post(form, data={"csrf_token": "stale"})
    assert r.status_code == 302 and r.headers["Location"] == "/login?next=" + form
    for location in (r.headers["Location"], "/login?next=" + form):          # the app's redirect, the proxy's
        page = anon.get(location).get_data(as_text=True)
        hidden = html.unescape(re.search(r'name="next" value="([^"]*)"', page).group(1))
        r = anon.post("/login", data={"user": "wildswarm", "password": PASSWORD, "csrf_token": csrf_of(anon),
                                      "next": hidden})
        assert r.status_code == 302 and r.headers["Location"] == lands_on
        assert anon.get(lands_on).status_code in (200, 404)                 # a page (the job may be gone), not a 405


def test_a_proxys_basic_auth_header_does_not_turn_pages_into_json(anon):
    r = anon.get("/jobs", headers={"Authorization": "Basic d2lsZDpzd2FybQ==", "Accept": "text/html"})
    assert r.status_code == 302 and r.headers["Location"].startswith("/login")


def test_bearer_token(anon, bearer, openapi):
    r = anon.get("/api/jobs", headers=bearer)
    assert r.status_code == 200
    openapi.check("GET", "/api/jobs", r)
    assert anon.get("/api/jobs", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert anon.get("/api/jobs", headers={"Authorization": TOKEN}).status_code == 401


def test_token_requests_need_no_csrf(anon, bearer, video_bytes):
    assert upload(anon, "t.mp4", video_bytes, headers=bearer).status_code == 201


def test_session_posts_need_the_csrf_token(client, settings, video_bytes):
    r = upload(client, "c.mp4", video_bytes)                       # no token
    assert r.status_code == 400 and "CSRF" in r.get_json()["error"]
    r = upload(client, "c.mp4", video_bytes, csrf="forged")
    assert r.status_code == 400
    r = upload(client, "c.mp4", video_bytes, field="files", url="/upload")      # the HTML form, no token
    assert r.status_code == 400 and b"CSRF" in r.data
    assert [p.name for p in (settings.data / "input").iterdir()] == []
    r = client.post("/logout")
    assert r.status_code == 400
    assert upload(client, "c.mp4", video_bytes, csrf=client.csrf).status_code == 201


def test_csrf_tokens_are_per_session(app, client, video_bytes):
    other = app.test_client()
    other.post("/login", data={"user": "wildswarm", "password": PASSWORD, "csrf_token": csrf_of(other)})
    assert upload(other, "c.mp4", video_bytes, csrf=client.csrf).status_code == 400


def test_session_cookie_is_httponly_and_samesite(anon):
    anon.get("/login")
    cookie = anon.get_cookie("wildswarm_session")
    assert cookie is not None and cookie.http_only and cookie.same_site == "Lax"


def test_access_control_off_exempts_the_whole_json_api_from_csrf(make_app, broker):
    """Audit: the exemption went by blueprint (``api.``), so the JSON endpoints of the other blueprints
    (bulk actions, exports, deployments, the results zip) still answered 'CSRF check failed' to scripts."""
    app = make_app(broker, web_auth=False, web_password="", web_token="", web_secret_key="")
    c = app.test_client()
    r = c.post("/api/deployments", json={"id": "cam1"})
    assert r.status_code == 201, r.get_data(as_text=True)
    for path, body, words in (("/api/jobs/bulk", {"action": "retry", "jobs": []}, ""),
                              ("/api/jobs/outputs.zip", {"jobs": []}, ""),
                              ("/api/exports", {"format": "csv", "jobs": []}, "jobs must be")):
        r = c.post(path, json=body)
        text = r.get_data(as_text=True)
        assert "CSRF" not in text and r.is_json, (path, r.status_code, text[:200])
        assert words in r.get_json()["error"] if r.status_code >= 400 else True
    assert c.post("/deployments", data={"id": "cam2"}).status_code == 400       # an HTML form still needs its token


def test_access_control_off(make_app, broker, video_bytes):
    app = make_app(broker, web_auth=False, web_password="", web_token="", web_secret_key="")
    c = app.test_client()
    assert c.get("/jobs").status_code == 200
    assert c.get("/login").status_code == 302
    assert upload(c, "open.mp4", video_bytes).status_code == 201         # scripts: no token, no CSRF
    r = upload(c, "form.mp4", video_bytes, field="files", url="/upload")  # the form still needs its token
    assert r.status_code == 400
    assert "Log out" not in c.get("/").get_data(as_text=True)
