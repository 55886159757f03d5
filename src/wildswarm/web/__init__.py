"""The web front of wildswarm: a Flask application factory, run by gunicorn (``wildswarm web``).

Blueprints: ``ui`` (pages: upload, jobs, job, node logs), ``api`` (JSON API and
its OpenAPI document), ``files`` (downloads, old ``/output`` and ``/plot``
links), ``auth`` (login), ``ops`` (``/healthz``, ``/metrics``). Configuration
comes only from the :class:`~wildswarm.config.Settings` handed in.
"""
from __future__ import annotations

import secrets
import time
from datetime import datetime, timezone

from flask import Flask, g, jsonify, render_template, request
from werkzeug.exceptions import BadRequest, HTTPException, RequestEntityTooLarge

from wildswarm import __version__
from wildswarm.publisher import Publisher
from wildswarm.config import Settings
from wildswarm.errors import JobConflict, JobError, JobStoreDataError, JobStoreError, UnsafePathError
from wildswarm.intake import Intake
from wildswarm.jobs import JobStore
from wildswarm.jobs.db import Database
from wildswarm.layout import Layout
from wildswarm.web import metrics
from wildswarm.web.security import check_settings, csrf_token, guard, session_user, wants_json
from wildswarm.web.uploads import FORM_SLACK, UPLOAD_ENDPOINTS, UploadRequest, body_limit, remove_temps, upload_limit


def create_app(settings: Settings | None = None, *, store: JobStore | None = None,
               publisher: Publisher | None = None) -> Flask:
    """Build the web app. ``settings`` default to the environment's; ConfigError if access control is
    on without credentials or a session key. ``store`` and ``publisher`` default to the job store and
    broker the settings name (connected on first use, so the app starts while they are still starting)."""
    settings = settings if settings is not None else Settings.from_env()
    check_settings(settings)
    layout = Layout(settings.data).ensure()
    layout.sweep_uploads(settings.web_stale_upload_seconds)
    store = store if store is not None else JobStore(Database(settings))
    from wildswarm.web.sessions import Sessions
    publisher = publisher if publisher is not None else Publisher(settings, "web")

    app = Flask(__name__)
    app.request_class = UploadRequest
    app.config.update(
        # Without access control a session only carries CSRF tokens and messages; then an
        # unset key is made up here (``wildswarm web`` makes one for all its workers).
        SECRET_KEY=settings.web_secret_key or secrets.token_hex(32),
        MAX_CONTENT_LENGTH=upload_limit(settings) + FORM_SLACK,
        # Werkzeug checks this against its parse buffer on every 64 KiB chunk, file parts
        # included: at 64 KiB a file whose chunk ends in CR/LF was refused as too large.
        MAX_FORM_MEMORY_SIZE=1024 * 1024,
        MAX_FORM_PARTS=200,
        SESSION_COOKIE_NAME="wildswarm_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.web_cookie_secure,
        PERMANENT_SESSION_LIFETIME=int(settings.web_session_seconds),
        WILDSWARM_SETTINGS=settings,
        WILDSWARM_LAYOUT=layout,
        WILDSWARM_STORE=store,
        WILDSWARM_PUBLISHER=publisher,
        WILDSWARM_INTAKE=Intake(settings, store, publisher),
        WILDSWARM_SESSIONS=Sessions(settings, store.db),
    )
    if settings.web_trusted_proxies > 0:      # the client's address, as the stack's proxy saw it
        from werkzeug.middleware.proxy_fix import ProxyFix
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=settings.web_trusted_proxies, x_proto=settings.web_trusted_proxies)

    from wildswarm.web import api, bulk, cluster, deployments, exports, files, ops, security, ui
    for bp in (ui.bp, api.bp, files.bp, exports.bp, deployments.bp, bulk.bp, cluster.bp, security.bp, ops.bp):
        app.register_blueprint(bp)

    app.before_request(_start)
    app.before_request(lambda: body_limit(settings))    # before the guard: its CSRF check may read a form
    app.before_request(guard)
    app.after_request(_finish)
    app.teardown_request(lambda _exc: remove_temps(request.environ))
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(JobConflict, lambda exc: _http_error(_Conflict(str(exc))))
    app.register_error_handler(JobError, lambda exc: _http_error(_NotFound(str(exc))))
    app.register_error_handler(UnsafePathError, lambda exc: _http_error(_NotFound(str(exc))))
    app.register_error_handler(JobStoreError, lambda exc: _http_error(_Unavailable(str(exc))))
    app.register_error_handler(JobStoreDataError, lambda exc: _http_error(BadRequest(str(exc))))
    app.jinja_env.globals.update(csrf_token=csrf_token, session_user=session_user, version=__version__,
                                 auth=settings.web_auth)
    app.jinja_env.filters["when"] = _when
    app.jinja_env.filters["bytes"] = human_bytes
    app.jinja_env.filters["utc_time"] = lambda t: datetime.fromtimestamp(t, timezone.utc).strftime("%H:%M")
    app.jinja_env.filters["found"] = found_text
    return app


class _NotFound(HTTPException):
    code = 404


class _Conflict(HTTPException):
    code = 409


class _Unavailable(HTTPException):
    code = 503


def _start() -> None:
    g.started = time.perf_counter()


def _finish(response):
    endpoint = metrics.endpoint_label(request.endpoint)
    metrics.REQUESTS.labels(metrics.method_label(request.method), endpoint, str(response.status_code)).inc()
    if "started" in g:
        metrics.REQUEST_DURATION.labels(endpoint).observe(time.perf_counter() - g.started)
    headers = response.headers
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("Referrer-Policy", "same-origin")
    headers.setdefault("X-Frame-Options", "DENY")
    if response.mimetype == "text/html":       # pages only: a browser's own viewer of a PNG or video styles it
        headers.setdefault("Content-Security-Policy",
                           "default-src 'self'; img-src 'self' data:; media-src 'self'; style-src 'self'; "
                           "script-src 'self'; connect-src 'self'; frame-ancestors 'none'; form-action 'self'; "
                           "base-uri 'none'; object-src 'none'")
    # Nothing shown behind the login stays in a browser's cache (the back button, the next user of a shared
    # browser, after logging out): every page, whichever blueprint made it, and the ui's other answers (logs).
    if response.mimetype == "text/html" or (request.endpoint and request.endpoint.startswith(("ui.", "auth."))):
        headers.setdefault("Cache-Control", "no-store")
    return response


def _http_error(exc: HTTPException):
    code = exc.code or 500
    description = exc.description or ""
    if isinstance(exc, RequestEntityTooLarge):
        from flask import current_app
        limit = upload_limit(current_app.config["WILDSWARM_SETTINGS"])
        description = f"The upload is larger than the limit of {human_bytes(limit)} ({limit} bytes)."
        if request.endpoint in UPLOAD_ENDPOINTS:
            metrics.UPLOADS_REFUSED.labels("too_large").inc()
        else:
            description = "The request is too large for this address."
    if wants_json():
        body = {"error": description or exc.name, "reason": exc.name.lower().replace(" ", "_")}
        if isinstance(exc, RequestEntityTooLarge):
            body["reason"] = "too_large"
        response = jsonify(body)
        response.status_code = code
    else:
        response = render_template("error.html", code=code, title=exc.name, message=description), code
    if code in (401, 413, 507):     # the rest of the body is not read: tell the client to stop sending
        response = _close(response)
    return response


def _close(response):
    from flask import make_response
    response = make_response(response)
    response.headers["Connection"] = "close"
    return response


def human_bytes(n: int | float | None) -> str:
    if n is None:
        return "–"
    n = float(n)
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def found_text(job) -> str:
    """What a done job found, in a few words (the jobs page's script writes the same: static/app.js)."""
    if job.animals is None:
        return "–"
    if job.animals == 0:
        return "no animals"
    n = job.tracks or job.animals
    species = list(job.species.items())
    named = ", ".join(f"{s} {c}" for s, c in species[:3]) + (", …" if len(species) > 3 else "")
    return f"{n} animal{'' if n == 1 else 's'}" + (f" · {named}" if named else "")


def _when(stamp) -> str:
    """A time (datetime or ISO text) as ``2026-11-25 14:29:14 UTC``."""
    if not stamp:
        return "–"
    if not isinstance(stamp, str):
        stamp = stamp.astimezone(timezone.utc).isoformat(timespec="seconds")
    return stamp.replace("T", " ")[:19] + (" UTC" if stamp.endswith(("+00:00", "Z")) else "")
