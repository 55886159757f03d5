"""Deployments: where and when a camera recorded (Camtrap DP's deployments), to choose on upload.

    GET  /deployments            the list, and a form to add or change one
    POST /deployments            that form
    GET  /api/deployments        the list (JSON)
    POST /api/deployments        add or replace one: {"id": ..., "latitude": ..., ...}
"""
from __future__ import annotations

from flask import Blueprint, current_app, flash, jsonify, redirect, render_template, request, url_for

from wildswarm.errors import JobError
from wildswarm.jobs.deployments import WEBHOOK, Deployments
from wildswarm.web.api import _error as api_error

bp = Blueprint("deployments", __name__)

FIELDS = [("id", "Deployment id", "text", "cam42-2026-07"), ("location_name", "Location name", "text", "Mara river, north bank"),
          ("location_id", "Location id", "text", ""), ("latitude", "Latitude", "number", "-1.4061"),
          ("longitude", "Longitude", "number", "35.0112"), ("coordinate_uncertainty", "Uncertainty (m)", "number", "30"),
          ("deployment_start", "Start (ISO 8601)", "text", "2026-07-01T06:00:00+03:00"),
          ("deployment_end", "End (ISO 8601)", "text", "2026-07-21T18:00:00+03:00"),
          ("camera_id", "Camera id", "text", ""), ("camera_model", "Camera model", "text", "Reconyx-HF2X"),
          ("camera_height", "Camera height (m)", "number", "0.8"), ("habitat", "Habitat", "text", ""),
          ("comments", "Comments", "text", ""),
          ("webhook_url", "Notify (webhook URL)", "url", "your receiver's http(s) address")]



def known() -> Deployments:
    return Deployments(current_app.config["WILDSWARM_STORE"].db)


@bp.get("/deployments")
def page():
    return render_template("deployments.html", deployments=known().all(), fields=FIELDS, errors=[])


@bp.post("/deployments")
def add():
    try:
        dep, _ = known().save_given({k: request.form.get(k, "") for k, *_ in FIELDS})
    except JobError as exc:
        return render_template("deployments.html", deployments=known().all(), fields=FIELDS,
                               errors=[str(exc)], given=request.form), 400
    flash(f"Deployment {dep.id} is saved.", "ok")
    return redirect(url_for("deployments.page"), 303)


@bp.get("/api/deployments")
def api_list():
    hooks = known().webhooks()
    return jsonify(deployments=[{**d.to_dict(), WEBHOOK: hooks.get(d.id)} for d in known().all()])


@bp.post("/api/deployments")
def api_add():
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        return api_error(400, "send a JSON object of deployment fields", "bad_request")
    try:
        dep, hook = known().save_given(body)
    except JobError as exc:
        return api_error(400, str(exc), "bad_deployment")
    response = jsonify({**dep.to_dict(), WEBHOOK: hook})
    response.status_code = 201
    return response
