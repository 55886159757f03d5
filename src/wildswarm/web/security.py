"""Access control: a login (session) or a bearer token, and CSRF protection of forms.

With ``web_auth`` on (the default) every page, download and API call needs
either a session made by the login form (user ``web_user``, password
``web_password``) or the header ``Authorization: Bearer <web_token>`` (the
token is never a password). Only the login page, ``/healthz``, ``/metrics``, the
OpenAPI document and static files are open (behind the stack's proxy,
``/metrics`` is not). The operator turns access control off explicitly with
``WILDSWARM_WEB_AUTH=0``.

Sessions live on the server (:mod:`wildswarm.web.sessions`): logging out ends
a session for every copy of its cookie, a new password ends every session
opened with the old one, and failed logins are throttled per client and per
user (wrong bearer tokens per client). ``/auth/check`` answers the proxy's
``auth_request`` from the request's headers alone (204 or 401), before the
proxy reads a request's body.

CSRF: every state-changing request made with a session (a browser) must carry
the session's token, in the form field ``csrf_token`` or the header
``X-CSRF-Token``. Requests authenticated by the bearer token carry no cookies
and need none; with access control off the JSON API needs none either (anyone
may call it then), but the HTML forms still do.
"""
from __future__ import annotations

import hmac
import secrets
from urllib.parse import unquote, urlsplit

from flask import (Blueprint, abort, current_app, g, jsonify, make_response, redirect, render_template, request,
                   session, url_for)
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from wildswarm.config import Settings
from wildswarm.errors import ConfigError

SESSION_ID = "sid"
SESSION_CSRF = "csrf"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
PUBLIC_ENDPOINTS = frozenset({"auth.login", "auth.check", "ops.healthz", "ops.metrics", "ops.favicon",
                              "api.openapi", "static"})
MIN_SECRET_KEY = 16

bp = Blueprint("auth", __name__)


def check_settings(settings: Settings) -> None:
    """Refuse to start with access control on but nothing to check it against."""
    if not settings.web_auth:
        return
    if not (settings.web_password or settings.web_token):
        raise ConfigError("web access control is on but no credential is set: set WILDSWARM_WEB_PASSWORD(_FILE) "
                          "for the login form and/or WILDSWARM_WEB_TOKEN(_FILE) for scripts, or turn access "
                          "control off explicitly with WILDSWARM_WEB_AUTH=0")
    if len(settings.web_secret_key) < MIN_SECRET_KEY:
        raise ConfigError(f"web access control is on, so WILDSWARM_WEB_SECRET_KEY(_FILE) must be set "
                          f"(a random string of at least {MIN_SECRET_KEY} characters) to sign sessions")


def _settings() -> Settings:
    return current_app.config["WILDSWARM_SETTINGS"]


def _equal(given: str, expected: str) -> bool:
    return bool(expected) and hmac.compare_digest(given.encode("utf-8", "replace"), expected.encode("utf-8"))


def _bearer() -> str | None:
    """The token of the request's ``Authorization: Bearer`` header, or None without one."""
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" else None


def token_ok(settings: Settings) -> bool:
    token = _bearer()
    return token is not None and _equal(token, settings.web_token)


def _throttle_token(right: bool):
    """A wrong bearer token counts against the client's address (apart from the login form's count): uncounted, the
    token (which opens as much as the password) could be guessed as fast as the app answers, on any API call
    or on ``/auth/check``. A locked address is refused even with the right token, or the lock would tell a
    guesser when it guessed right. Returns the refusal, or None to go on."""
    from wildswarm.errors import JobStoreError
    sessions, address = _sessions(), client_address()
    try:
        lock = sessions.locked(address)
        if lock is None and not right:
            sessions.failed(address)
    except JobStoreError:       # best effort: a job store that is down must not turn /healthz into a 503
        return None
    if lock is None:
        return None
    if request.endpoint == "auth.check":            # the proxy's auth_request understands 2xx, 401 and 403 only
        return "", 401
    response = jsonify(error=f"Too many wrong tokens from this address: try again in {lock.seconds} s.",
                       reason="too_many_requests")
    response.status_code = 429
    response.headers["Retry-After"] = str(lock.seconds)
    return response


def csrf_token() -> str:
    """This session's CSRF token (made on first use); templates call it."""
    token = session.get(SESSION_CSRF)
    if not isinstance(token, str) or len(token) < 32:
        token = session[SESSION_CSRF] = secrets.token_urlsafe(32)
    return token


def _csrf_ok() -> bool:
    expected = session.get(SESSION_CSRF)
    if not isinstance(expected, str) or not expected:
        return False
    given = request.headers.get(CSRF_HEADER) or request.form.get(CSRF_FIELD, "")
    return _equal(given, expected)


def wants_json() -> bool:
    bearer = request.headers.get("Authorization", "").lower().startswith("bearer ")
    if request.path.startswith("/api/") or bearer:   # (not Basic: a proxy in front may add that)
        return True
    best = request.accept_mimetypes.best_match(["text/html", "application/json"])
    return best == "application/json"


def _sessions():
    return current_app.config["WILDSWARM_SESSIONS"]


def session_user() -> str | None:
    """The user of this request's live server-side session (looked up once per request), or None."""
    if "session_user" not in g:
        sid = session.get(SESSION_ID)
        g.session_user = _sessions().valid(sid) if sid else None
    return g.session_user


def logged_in() -> bool:
    return not _settings().web_auth or bool(g.get("via_token")) or session_user() is not None


def client_address() -> str:
    """The client's address: the proxy's X-Forwarded-For when the app sits behind it (web_trusted_proxies)."""
    return request.remote_addr or "unknown"


def guard():
    """before_request: log in first, then CSRF for state-changing browser requests."""
    settings = _settings()
    endpoint = request.endpoint
    g.via_token = token_ok(settings)
    if settings.web_auth and _bearer() is not None:
        refused = _throttle_token(g.via_token)
        if refused is not None:
            return refused
    if endpoint is None:            # 404/405: let routing answer
        return None
    if settings.web_auth and endpoint not in PUBLIC_ENDPOINTS and not logged_in():
        if wants_json():
            response = jsonify(error="login required: send 'Authorization: Bearer <token>' or log in",
                               reason="unauthorized")
            response.status_code = 401
            response.headers["WWW-Authenticate"] = 'Bearer realm="wildswarm"'
            return response
        return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))
    if request.method in UNSAFE_METHODS and not g.via_token and endpoint != "auth.login":
        if not settings.web_auth and request.path.startswith("/api/"):   # the whole JSON API, every blueprint's
            return None
        if not _csrf_ok():
            abort(400, description="This form has expired or did not come from this site (CSRF check failed). "
                                   "Reload the page and try again.")
    return None


def _safe_next(target: str | None) -> str:
    """Only a path on this site: never another host (open redirect); and one a browser can open (GET)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return url_for("ui.index")
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or any(ord(c) < 32 for c in target):
        return url_for("ui.index")
    return _openable(target, parts.path)


def _openable(target: str, path: str) -> str:
    """``target``, unless it is the address of a form (/upload, /logout, a job's retry, /jobs/bulk), which a
    request without a login was sent to the login with: after logging in, the browser would GET it and meet
    a 405 (or, for /jobs/bulk, "no job 'bulk'"). Then the nearest page above it: the upload page, the job,
    the jobs page."""
    adapter = current_app.url_map.bind_to_environ(request.environ)
    found = path
    while found not in ("", "/") and not _a_page(adapter, unquote(found)):
        found = found.rstrip("/").rpartition("/")[0]
    return target if found == path else found or url_for("ui.index")


def _a_page(adapter, path: str) -> bool:
    """Whether GET opens ``path`` as what it names: not when only POST does, nor when a form's own rule fits
    it more exactly than the page pattern GET finds (/jobs/bulk is no job). Addresses the app does not route
    (the consoles behind the proxy) count as pages."""
    try:
        page, _ = adapter.match(path, method="GET", return_rule=True)
    except MethodNotAllowed:
        return False
    except HTTPException:           # not the app's, or a redirect to what is
        return True
    try:
        form, _ = adapter.match(path, method="POST", return_rule=True)
    except HTTPException:
        return True
    return form.rule == page.rule


@bp.route("/login", methods=["GET", "POST"])
def login():
    settings = _settings()
    next_url = _safe_next(request.values.get("next"))
    if not settings.web_auth:
        return redirect(next_url)
    error, status, retry_after = None, 200, None
    if request.method == "POST":
        if request.mimetype != "application/x-www-form-urlencoded":
            error, status = "The login form must be sent as a form.", 415
        elif not _csrf_ok():
            error, status = "The login form expired. Please try again.", 400
        else:
            user = request.form.get("user", "")[:200]
            password = request.form.get("password", "")
            address, sessions = client_address(), _sessions()
            lock = sessions.locked(address, user)
            if lock is not None:
                error, status, retry_after = (f"Too many failed logins: try again in {lock.seconds} s.", 429,
                                              lock.seconds)
            elif _equal(user, settings.web_user) & _equal(password, settings.web_password):
                sessions.succeeded(address)
                sessions.close(session.get(SESSION_ID))     # a login over a live one ends it, every copy of it
                session.clear()
                session[SESSION_ID] = sessions.open(settings.web_user)
                session.permanent = True
                csrf_token()
                return redirect(next_url)
            else:
                sessions.failed(address, user)
                error, status = "Wrong user name or password.", 401
    response = make_response(render_template("login.html", error=error, next=next_url, user=settings.web_user),
                             status)
    if retry_after:
        response.headers["Retry-After"] = str(retry_after)
    return response


@bp.route("/logout", methods=["POST"])
def logout():
    _sessions().close(session.get(SESSION_ID))
    session.clear()
    return redirect(url_for("auth.login"))


@bp.get("/auth/check")
def check():
    """For the proxy's auth_request: 204 for a logged-in session or the bearer token, else 401 with the
    login address to send a browser to (X-Login-Location): the request's own (X-Original-URI) as ``next``,
    encoded, so a query of several parts comes back whole. nginx has no way to encode it itself."""
    if logged_in():
        return "", 204
    original = request.headers.get("X-Original-URI", "")
    if original.startswith("/") and not original.startswith("//") and "\\" not in original:
        location = url_for("auth.login", next=original)
    else:
        location = url_for("auth.login")
    return "", 401, {"X-Login-Location": location}
