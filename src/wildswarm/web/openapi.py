"""The OpenAPI 3.1 description of the JSON API, served at ``/api/openapi.json``.

The tests validate this document and every API response against it.
"""
from __future__ import annotations

from wildswarm import __version__
from wildswarm.exporters import FORMATS as EXPORT_FORMATS

_NULLABLE_STR = {"type": ["string", "null"]}


def _error(description: str) -> dict:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


_JOB_ID = {"name": "job_id", "in": "path", "required": True, "description": "Job id (hex, from the video's content)",
           "schema": {"type": "string"}}

JOB = {
    "type": "object",
    "required": ["id", "input_name", "status", "progress", "frames_done", "frames_total", "created_at", "links"],
    "properties": {
        "id": {"type": "string", "pattern": "^[0-9a-f]{8,64}$"},
        "input_name": {"type": "string", "description": "File name in input/ (then input_done/ or input_failed/)"},
        "status": {"type": "string", "enum": ["queued", "running", "done", "failed", "cancelled"]},
        "progress": {"type": "number", "minimum": 0, "maximum": 1},
        "frames_done": {"type": "integer", "minimum": 0},
        "frames_total": {"type": "integer", "minimum": 0},
        "node": _NULLABLE_STR,
        "attempts": {"type": "integer", "minimum": 0},
        "created_at": {"type": "string"},
        "started_at": _NULLABLE_STR,
        "finished_at": _NULLABLE_STR,
        "webhook_url": {**_NULLABLE_STR, "description": "POSTed to when the job ends"},
        "notify_state": {"type": ["string", "null"], "enum": [None, "waiting", "sent", "gave_up"]},
        "notify_attempts": {"type": "integer", "minimum": 0},
        "notify_error": {**_NULLABLE_STR, "description": "Why the last notification did not arrive"},
        "notified_at": _NULLABLE_STR,
        "output": {"type": ["string", "null"], "description": "Result folder name under output/"},
        "outputs": {"type": "array", "items": {"type": "string"}},
        "error": {"type": ["string", "null"], "description": "Why it failed (or why its last attempt did)"},
        "refused": {"type": "boolean", "description": "Not a video wildswarm takes: it cannot be retried"},
        "publish_pending": {"type": "boolean",
                            "description": "Recorded while the broker was unreachable; published when it answers"},
        "updated_at": _NULLABLE_STR,
        "lease_until": {"type": ["string", "null"], "description": "Until when its worker holds it (running)"},
        "retry_at": {"type": ["string", "null"], "description": "A retriable failure waits until then"},
        "seq": {"type": "integer", "minimum": 0, "description": "Change number of its last change"},
        "untrained": {"type": "boolean", "description": "Made with untrained (random) weights: meaningless"},
        "size_bytes": {"type": ["integer", "null"]},
        "timings": {"type": "object", "additionalProperties": {"type": "number"}},
        "pending_publish": {"type": "boolean",
                            "description": "Saved while the broker was unreachable; published when it answers"},
        "parent_id": {"type": ["string", "null"], "description": "Always null here: listings show whole videos"},
        "segment": {"type": ["integer", "null"]},
        "segments": {"type": "integer", "minimum": 0,
                     "description": "A long video analysed in segments across the workers: how many (0: one piece)"},
        "plan": {"type": ["object", "null"], "description": "Its segment plan: total, length and overlap in frames"},
        "replans": {"type": "integer", "minimum": 0,
                    "description": "Times its segments were planned again: a worker of another version or other "
                                   "settings (a rolling update) took one, and planned the video under its own"},
        "profile": {"type": ["string", "null"], "description": "The analysis profile it is analysed with "
                                                               "(GET /api/profiles; null: from before profiles)"},
        "profile_settings": {"type": "object", "description": "The settings that profile resolved to on the worker "
                                                              "that analysed it (set once done)"},
        "animals": {"type": ["integer", "null"], "minimum": 0,
                    "description": "Done: the most animals in one frame (0: none found); null before"},
        "tracks": {"type": ["integer", "null"], "minimum": 0, "description": "Done: distinct animals tracked"},
        "species": {"type": "object", "additionalProperties": {"type": "integer"},
                    "description": "Done, with a classifier: each species and how many tracked animals were it"},
        "links": {"type": "object", "required": ["self", "page"],
                  "properties": {"self": {"type": "string"}, "page": {"type": "string"}, "zip": {"type": "string"}}},
    },
}

JOB_DETAIL = {
    "allOf": [{"$ref": "#/components/schemas/Job"}, {
        "type": "object",
        "required": ["files", "warning"],
        "properties": {
            "files": {"type": "array", "items": {"$ref": "#/components/schemas/File"}},
            "warning": {"type": ["string", "null"], "description": "Set when untrained weights were used"},
            "segment_jobs": {"type": "array", "description": "A long video's segments, in order",
                             "items": {"type": "object", "required": ["segment", "status"], "properties": {
                                 "segment": {"type": "integer", "minimum": 0},
                                 "status": {"type": "string", "enum": ["queued", "running", "done", "failed", "cancelled"]},
                                 "node": _NULLABLE_STR, "attempts": {"type": "integer", "minimum": 0},
                                 "frames_done": {"type": "integer", "minimum": 0},
                                 "frames_total": {"type": "integer", "minimum": 0}}}},
        },
    }],
}

PROFILE = {
    "type": "object", "required": ["name", "description", "source", "sets", "settings"],
    "properties": {
        "name": {"type": "string", "pattern": "^[a-z0-9][a-z0-9_-]{0,39}$"},
        "description": {"type": "string"},
        "source": {"type": "string", "description": "'shipped', or the operator's profiles file"},
        "sets": {"type": "object", "description": "The settings the profile sets itself"},
        "settings": {"type": "object", "description": "Every setting a profile may set, as a job gets it here"},
    },
}

_NUM = {"type": ["number", "null"]}
CLUSTER = {
    "type": "object", "required": ["at", "workers", "queue", "backlog", "nodes", "throughput", "prometheus", "store"],
    "properties": {
        "at": {"type": "string", "format": "date-time"},
        "heartbeat_seconds": {"type": "number", "description": "How often workers report; lost after 3 missed"},
        "alive": {"type": "integer", "minimum": 0},
        "workers": {"type": "array", "items": {"type": "object", "required": ["owner", "node", "state"], "properties": {
            "owner": {"type": "string"}, "node": {"type": "string"}, "job_name": {"type": ["string", "null"]},
            "state": {"type": "string", "enum": ["running", "idle", "stopped", "lost"]},
            "job_id": {"type": ["string", "null"]}, "frames_per_s": {"type": "number"},
            "frames": {"type": "integer"}, "jobs_handled": {"type": "integer"},
            "seen_seconds_ago": {"type": "number"}}}},
        "queue": {"type": ["object", "null"], "description": "Null while the job store does not answer",
                  "properties": {k: {"type": "integer", "minimum": 0} for k in (
                      "queued", "retrying", "pending_publish", "running", "dead_lettered", "failed", "done")}},
        "backlog": {"type": ["object", "null"], "properties": {
            "frames": {"type": "integer", "description": "Frames still to analyse (estimated for jobs not started)"},
            "jobs": {"type": "integer"}, "frames_per_s": {"type": "number", "description": "The alive workers' rate"},
            "eta_seconds": {**_NUM, "description": "Backlog / rate; null when no worker analyses"}}},
        "nodes": {"type": "array", "items": {"type": "object", "required": ["node"], "properties": {
            "node": {"type": "string"}, "workers": {"type": "integer"}, "cpu": {**_NUM, "description": "0-1"},
            "cores": {"type": ["integer", "null"]}, "mem_used": _NUM, "mem_total": _NUM, "gpu": _NUM,
            "gpu_mem_used": _NUM}}},
        "throughput": {"type": "object", "properties": {"bucket_seconds": {"type": "integer"}, "series": {
            "type": "array", "items": {"type": "object", "required": ["t", "frames_per_s", "videos_per_hour"],
                                       "properties": {"t": {"type": "number", "description": "Start (Unix time)"},
                                                      "frames_per_s": {"type": "number"},
                                                      "videos_per_hour": {"type": "number"}}}}}},
        "prometheus": {"type": "object", "properties": {"url": {"type": ["string", "null"]},
                                                        "reachable": {"type": ["boolean", "null"]},
                                                        "error": {"type": ["string", "null"]}}},
        "store": {"type": "object", "properties": {"reachable": {"type": "boolean"}, "error": {"type": ["string", "null"]}}},
        "chart": {"type": "boolean", "description": "Whether the charting library is installed"},
    },
}

SCHEMAS = {
    "BulkResult": {"type": "object", "required": ["action", "results", "counts"], "properties": {
        "action": {"type": "string"},
        "results": {"type": "array", "items": {"type": "object", "required": ["id", "result", "message"], "properties": {
            "id": {"type": "string"},
            "result": {"type": "string", "enum": ["retried", "pending", "cancelled", "deleted", "conflict", "missing"]},
            "message": {"type": "string"},
            "removed": {"type": "array", "items": {"type": "string"}, "description": "Paths removed (delete)"}}}},
        "counts": {"type": "object", "additionalProperties": {"type": "integer"}}}},
    "Profile": PROFILE,
    "Cancelled": {"type": "object", "required": ["job", "message"],
                  "properties": {"job": {"$ref": "#/components/schemas/Job"}, "message": {"type": "string"}}},
    "Cluster": CLUSTER,
    "ProfileList": {"type": "object", "required": ["default", "profiles"], "properties": {
        "default": {"type": "string", "description": "The profile of a job that names none"},
        "profiles": {"type": "array", "items": {"$ref": "#/components/schemas/Profile"}},
        "problem": {"type": ["string", "null"], "description": "Why the operator's profiles file was not read"}}},
    "Job": JOB,
    "JobDetail": JOB_DETAIL,
    "File": {"type": "object", "required": ["name", "size", "label", "url"],
             "properties": {"name": {"type": "string"}, "size": {"type": "integer", "minimum": 0},
                            "label": {"type": "string"}, "url": {"type": "string"}}},
    "JobList": {"type": "object", "required": ["jobs", "count", "seq"],
                "properties": {"jobs": {"type": "array", "items": {"$ref": "#/components/schemas/Job"}},
                               "count": {"type": "integer", "minimum": 0},
                               "total": {"type": "integer", "minimum": 0,
                                         "description": "Jobs matching (counting stops at 10,000)"},
                               "total_exact": {"type": "boolean"},
                               "offset": {"type": "integer", "minimum": 0},
                               "seq": {"type": "integer", "minimum": 0,
                                       "description": "Ask ?since=<seq> next time for only what changed"},
                               "deleted": {"type": "array", "items": {"type": "string"},
                                           "description": "?since: the ids of the jobs deleted meanwhile, in "
                                                          "the order of their deletion (kept for a day)"},
                               "more": {"type": "boolean",
                                        "description": "?since: more changes wait; ask again at once"}}},
    "Submitted": {"type": "object", "required": ["job", "result", "message"],
                  "properties": {"job": {"$ref": "#/components/schemas/Job"},
                                 "result": {"type": "string", "enum": ["queued", "pending", "duplicate"]},
                                 "message": {"type": "string"}}},
    "Retried": {"type": "object", "required": ["job", "published", "message"],
                "properties": {"job": {"$ref": "#/components/schemas/Job"}, "published": {"type": "boolean"},
                               "message": {"type": "string"}}},
    "Deployment": {"type": "object", "required": ["id"], "additionalProperties": False, "properties": {
        "id": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"},
        "location_id": {"type": ["string", "null"]}, "location_name": {"type": ["string", "null"]},
        "latitude": {"type": ["number", "null"], "minimum": -90, "maximum": 90},
        "longitude": {"type": ["number", "null"], "minimum": -180, "maximum": 180},
        "coordinate_uncertainty": {"type": ["integer", "null"], "minimum": 1},
        "deployment_start": {"type": ["string", "null"], "description": "ISO 8601"},
        "deployment_end": {"type": ["string", "null"], "description": "ISO 8601"},
        "camera_id": {"type": ["string", "null"]}, "camera_model": {"type": ["string", "null"]},
        "camera_height": {"type": ["number", "null"], "minimum": 0},
        "habitat": {"type": ["string", "null"]}, "comments": {"type": ["string", "null"]},
        "webhook_url": {"type": ["string", "null"], "description": "POSTed to when a job of its videos ends, for "
                                                                   "jobs that name no webhook of their own"}}},
    "DeploymentList": {"type": "object", "required": ["deployments"], "properties": {
        "deployments": {"type": "array", "items": {"$ref": "#/components/schemas/Deployment"}}}},
    "Error": {"type": "object", "required": ["error", "reason"],
              "properties": {"error": {"type": "string"}, "reason": {"type": "string"}}},
    "Health": {"type": "object", "required": ["status", "data", "broker"],
               "properties": {
                   "status": {"type": "string", "enum": ["ok", "degraded"]},
                   "version": {"type": "string"},
                   "data": {"type": "object", "required": ["writable"],
                            "properties": {"root": {"type": "string"}, "writable": {"type": "boolean"},
                                           "error": _NULLABLE_STR, "free_bytes": {"type": ["integer", "null"]}}},
                   "store": {"type": "object", "required": ["reachable"],
                             "properties": {"reachable": {"type": "boolean"}, "error": _NULLABLE_STR}},
                   "broker": {"type": "object", "required": ["reachable"],
                              "properties": {"reachable": {"type": "boolean"},
                                             "pending_jobs": {"type": ["integer", "null"], "minimum": 0}}}}},
}

_UNAUTHORIZED = _error("No valid login session or bearer token")
_NOT_FOUND = _error("No such job, or no such file")
_FORMAT = {"name": "format", "in": "path", "required": True, "description": "Export format (docs/exports.md)",
           "schema": {"type": "string", "enum": list(EXPORT_FORMATS)}}
_EXPORT = {"description": "The export, as an attachment: JSON for md-json, a zip for the others",
           "content": {"application/json": {"schema": {"type": "object"}},
                       "application/zip": {"schema": {"type": "string", "format": "binary"}}}}
_REFUSED = {"description": "A job is unknown, not finished or without its result: each one named",
            "content": {"application/json": {"schema": {
                "type": "object", "required": ["error", "reason", "problems"],
                "properties": {"error": {"type": "string"}, "reason": {"type": "string"},
                               "problems": {"type": "array", "items": {"type": "string"}}}}}}}


def _json(ref: str, description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": {"$ref": ref}}}}


PATHS = {
    "/api/jobs": {
        "get": {
            "operationId": "listJobs", "summary": "Jobs, newest first: filtered, paged; or only what changed",
            "description": "With `since`, only the jobs changed after that change number (oldest change "
                           "first, at most 500 changes; `deleted` names the jobs deleted meanwhile; `more` says "
                           "whether to ask again at once), and no filters.",
            "parameters": [
                {"name": "status", "in": "query", "required": False,
                 "schema": {"type": "string", "enum": ["queued", "running", "done", "failed", "cancelled"]}},
                {"name": "q", "in": "query", "required": False, "description": "Part of the input's name, any case",
                 "schema": {"type": "string", "maxLength": 200}},
                {"name": "node", "in": "query", "required": False, "schema": {"type": "string"}},
                {"name": "from", "in": "query", "required": False, "description": "Created on or after this day",
                 "schema": {"type": "string", "format": "date"}},
                {"name": "to", "in": "query", "required": False, "description": "Created on or before this day",
                 "schema": {"type": "string", "format": "date"}},
                {"name": "animals", "in": "query", "required": False,
                 "description": "yes: done with animals found; no: done and empty (no animal in any frame)",
                 "schema": {"type": "string", "enum": ["yes", "no"]}},
                {"name": "species", "in": "query", "required": False,
                 "description": "Done, with this species (as the classifier names it) among its animals",
                 "schema": {"type": "string", "maxLength": 100}},
                {"name": "profile", "in": "query", "required": False, "schema": {"type": "string", "maxLength": 100}},
                {"name": "deployment", "in": "query", "required": False,
                 "schema": {"type": "string", "maxLength": 100}},
                {"name": "untrained", "in": "query", "required": False, "schema": {"type": "string",
                                                                                   "enum": ["yes", "no"]}},
                {"name": "order", "in": "query", "required": False,
                 "schema": {"type": "string", "enum": ["newest", "oldest", "animals", "longest", "name"],
                            "default": "newest"}},
                {"name": "limit", "in": "query", "required": False,
                 "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 200}},
                {"name": "offset", "in": "query", "required": False,
                 "schema": {"type": "integer", "minimum": 0, "maximum": 100000, "default": 0}},
                {"name": "since", "in": "query", "required": False,
                 "schema": {"type": "integer", "minimum": 0}},
            ],
            "responses": {"200": _json("#/components/schemas/JobList", "The jobs"),
                          "400": _error("A parameter is malformed"), "401": _UNAUTHORIZED},
        },
        "post": {
            "operationId": "submitVideo", "summary": "Upload one MP4 video and queue its job",
            "description": "The job id comes from the video's content: a video uploaded before gives its "
                           "existing job (200). Refused: no file (400), a hostile name (400), not .mp4 (415), "
                           "not an MP4 video (415), empty (400), over the size limit (413), an unknown profile or deployment (400).",
            "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
                "type": "object", "required": ["file"],
                "properties": {"file": {"type": "string", "format": "binary"},
                               "profile": {"type": "string", "description": "The analysis profile "
                                           "(GET /api/profiles; default: the stack's), sent before the file"},
                               "deployment": {"type": "string", "description": "A known deployment's id "
                                              "(GET /api/deployments), sent before the file"},
                               "recorded_at": {"type": "string", "description": "When the video was recorded "
                                               "(ISO 8601 with time of day and UTC offset), for a video whose "
                                               "metadata does not say"},
                               "webhook": {"type": "string", "description": "An http(s) URL that receives a JSON "
                                           "POST when the job ends (default: its deployment's), sent before the "
                                           "file"}}}}}},
            "responses": {"201": _json("#/components/schemas/Submitted", "Saved and queued (or pending)"),
                          "200": _json("#/components/schemas/Submitted", "This video is already a job"),
                          "400": _error("No file, or a hostile or unusable file name"), "401": _UNAUTHORIZED,
                          "413": _error("Over the upload size limit"),
                          "415": _error("Not an .mp4 file, or not a readable MP4 video"),
                          "503": _error("The job store cannot be reached right now"),
                          "507": _error("The server's disk is full")},
        },
    },
    "/api/jobs/{job_id}": {
        "get": {"operationId": "getJob", "summary": "One job, with its result files",
                "parameters": [_JOB_ID],
                "responses": {"200": _json("#/components/schemas/JobDetail", "The job"), "401": _UNAUTHORIZED,
                              "404": _NOT_FOUND}},
    },
    "/api/jobs/{job_id}/retry": {
        "post": {"operationId": "retryJob", "summary": "Queue a failed (or stranded) job again",
                 "parameters": [_JOB_ID],
                 "responses": {"202": _json("#/components/schemas/Retried", "Reset and queued"),
                               "401": _UNAUTHORIZED, "404": _NOT_FOUND,
                               "409": _error("The job is done, running, already queued or refused, or its input "
                                             "is gone")}},
    },
    "/api/jobs/{job_id}/cancel": {
        "post": {"operationId": "cancelJob", "summary": "Cancel a job: a queued one leaves the queue, a running one "
                                                        "stops at its next batch of frames",
                 "parameters": [_JOB_ID],
                 "responses": {"202": _json("#/components/schemas/Cancelled", "Cancelled"),
                               "401": _UNAUTHORIZED, "404": _NOT_FOUND,
                               "409": _error("The job has ended (done, failed, cancelled) or is a segment of another")}},
    },
    "/api/jobs/{job_id}/files/{filename}": {
        "get": {"operationId": "downloadFile", "summary": "One result file (supports Range requests)",
                "parameters": [_JOB_ID, {"name": "filename", "in": "path", "required": True,
                                         "schema": {"type": "string"}},
                               {"name": "download", "in": "query", "required": False,
                                "schema": {"type": "string", "enum": ["1"]}}],
                "responses": {"200": {"description": "The file",
                                      "content": {"application/octet-stream": {"schema": {
                                          "type": "string", "format": "binary"}}}},
                              "206": {"description": "The requested byte range"},
                              "304": {"description": "Not modified"}, "401": _UNAUTHORIZED, "404": _NOT_FOUND,
                              "416": {"description": "Range not satisfiable"}}},
    },
    "/api/jobs/{job_id}/outputs.zip": {
        "get": {"operationId": "downloadZip", "summary": "Every result file as one zip (streamed)",
                "parameters": [_JOB_ID],
                "responses": {"200": {"description": "The zip", "content": {"application/zip": {"schema": {
                    "type": "string", "format": "binary"}}}}, "401": _UNAUTHORIZED, "404": _NOT_FOUND}},
    },
    "/api/jobs/{job_id}/export/{format}": {
        "get": {"operationId": "exportJob", "summary": "One finished job's result in a field format (a file)",
                "parameters": [_JOB_ID, _FORMAT],
                "responses": {"200": _EXPORT, "400": _error("No such format"), "401": _UNAUTHORIZED,
                              "404": _NOT_FOUND, "409": _REFUSED}},
    },
    "/api/exports": {
        "post": {"operationId": "exportJobs", "summary": "Many finished jobs' results in one file of a field format",
                 "requestBody": {"required": True, "content": {
                     "application/json": {"schema": {
                         "type": "object", "required": ["format", "jobs"],
                         "properties": {"format": {"type": "string", "enum": list(EXPORT_FORMATS)},
                                        "jobs": {"type": "array", "minItems": 1, "maxItems": 2000,
                                                 "items": {"type": "string"}},
                                        "options": {"type": "object", "description": "What a format asks for "
                                                    "and no video says (docs/exports.md)", "properties": {
                                            "title": {"type": "string"},
                                            "contributors": {"type": "array", "items": {"type": "object"}},
                                            "sampling_design": {"type": "string"},
                                            "capture_method": {"type": "string",
                                                               "enum": ["activityDetection", "timeLapse"]},
                                            "project_title": {"type": "string"},
                                            "media_observations": {"type": "boolean"},
                                            "subject": {"type": "object"}}}}}},
                     "application/x-www-form-urlencoded": {"schema": {
                         "type": "object", "properties": {"format": {"type": "string"},
                                                          "job": {"type": "array", "items": {"type": "string"}}}}}}},
                 "responses": {"200": _EXPORT, "400": _error("Bad format or job list"), "401": _UNAUTHORIZED,
                               "409": _REFUSED}},
    },
    "/api/jobs/bulk": {
        "post": {"operationId": "bulkAction",
                 "summary": "Retry, cancel or delete many jobs: a list, or every job a filter matches",
                 "description": "At most 1000 jobs. Retry: failed, cancelled (or stranded) jobs are queued again. "
                                "Cancel: queued jobs leave the queue, running ones stop at their next batch of "
                                "frames. Delete: done, failed or cancelled jobs lose their record and result folder "
                                "(and, with delete_inputs, their video in input_done/ or input_failed/). Each job's "
                                "result is answered; one job's conflict does not stop the others.",
                 "requestBody": {"required": True, "content": {"application/json": {"schema": {
                     "type": "object", "required": ["action"], "properties": {
                         "action": {"type": "string", "enum": ["retry", "cancel", "delete"]},
                         "jobs": {"type": "array", "items": {"type": "string"}, "maxItems": 1000},
                         "filter": {"type": "object", "additionalProperties": {"type": "string"},
                                    "description": "The listing's filters (GET /api/jobs), instead of jobs"},
                         "delete_inputs": {"type": "boolean", "default": False}}}}}},
                 "responses": {"200": _json("#/components/schemas/BulkResult", "What happened to each job"),
                               "400": _error("No action, no jobs, or a bad filter"), "401": _UNAUTHORIZED}},
    },
    "/api/jobs/outputs.zip": {
        "post": {"operationId": "downloadMany", "summary": "The results of many done jobs as one zip, streamed: "
                                                           "a list, or every job a filter matches",
                 "description": "At most 1000 jobs. Each done job's result files are in a folder of its own; "
                                "skipped.txt names the jobs left out (not done, no results, unknown) and why.",
                 "requestBody": {"required": True, "content": {"application/json": {"schema": {
                     "type": "object", "properties": {
                         "jobs": {"type": "array", "items": {"type": "string"}, "maxItems": 1000},
                         "filter": {"type": "object", "additionalProperties": {"type": "string"},
                                    "description": "The listing's filters (GET /api/jobs), instead of jobs"}}}}}},
                 "responses": {"200": {"description": "The zip archive",
                                       "content": {"application/zip": {"schema": {"type": "string",
                                                                                  "format": "binary"}}}},
                               "400": _error("No jobs, or a bad filter"), "401": _UNAUTHORIZED,
                               "409": _error("None of them has results")}},
    },
    "/api/profiles": {
        "get": {"operationId": "listProfiles", "summary": "Analysis profiles: the models and settings a job may name",
                "responses": {"200": _json("#/components/schemas/ProfileList", "Every profile"),
                              "401": _UNAUTHORIZED}},
    },
    "/api/cluster": {
        "get": {"operationId": "cluster", "summary": "The cluster: workers, nodes (from Prometheus), queue, backlog "
                                                     "and its time to finish, throughput of the last 6 hours",
                "responses": {"200": _json("#/components/schemas/Cluster", "The cluster now"),
                              "401": _UNAUTHORIZED}},
    },
    "/api/deployments": {
        "get": {"operationId": "listDeployments", "summary": "Deployments: where and when cameras recorded",
                "responses": {"200": _json("#/components/schemas/DeploymentList", "Every deployment"),
                              "401": _UNAUTHORIZED}},
        "post": {"operationId": "saveDeployment", "summary": "Add a deployment, or replace the one of the same id",
                 "requestBody": {"required": True, "content": {"application/json": {"schema": {
                     "$ref": "#/components/schemas/Deployment"}}}},
                 "responses": {"201": _json("#/components/schemas/Deployment", "Saved"),
                               "400": _error("A field is missing or out of range"), "401": _UNAUTHORIZED}},
    },
    "/api/openapi.json": {
        "get": {"operationId": "openapi", "summary": "This document", "security": [],
                "responses": {"200": {"description": "OpenAPI 3.1 document",
                                      "content": {"application/json": {"schema": {"type": "object"}}}}}},
    },
    "/healthz": {
        "get": {"operationId": "health", "summary": "Health: the app answers; the data root, job store and "
                                                    "broker are reported (never fatal)",
                "security": [],
                "responses": {"200": _json("#/components/schemas/Health", "The app answers")}},
    },
    "/metrics": {
        "get": {"operationId": "metrics", "summary": "Prometheus metrics", "security": [],
                "responses": {"200": {"description": "Prometheus text format",
                                      "content": {"text/plain": {"schema": {"type": "string"}}}}}},
    },
}

# Wrong bearer tokens lock the client's address for a while, as wrong passwords do (web/security.py).
_THROTTLED = _error("Too many wrong bearer tokens (or logins) from this address: wait Retry-After seconds")
for _operations in PATHS.values():
    for _operation in _operations.values():
        if "401" in _operation["responses"]:
            _operation["responses"].setdefault("429", _THROTTLED)


def document() -> dict:
    return {
        "openapi": "3.1.0",
        "info": {"title": "wildswarm", "version": __version__,
                 "description": "Upload wildlife videos, follow their analysis, download the results. "
                                "Authenticate with 'Authorization: Bearer <WILDSWARM_WEB_TOKEN>' (or a login "
                                "session plus the X-CSRF-Token header), unless access control is off."},
        "servers": [{"url": "/"}],
        "security": [{"bearerAuth": []}, {"sessionCookie": []}],
        "paths": PATHS,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"},
                                "sessionCookie": {"type": "apiKey", "in": "cookie", "name": "wildswarm_session"}},
        },
    }
