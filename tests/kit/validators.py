"""The field formats' own validators, as the tests call them."""
from __future__ import annotations

from pathlib import Path


def megadetector_problems(path_or_doc) -> tuple[list[str], list[str]]:
    """(errors, warnings) of MegaDetector's own ``validate_batch_results`` for a file or a loaded dict."""
    from megadetector.postprocessing.validate_batch_results import (ValidateBatchResultsOptions,
                                                                    validate_batch_results)
    options = ValidateBatchResultsOptions()
    arg = str(path_or_doc) if isinstance(path_or_doc, Path) else path_or_doc
    result = validate_batch_results(arg, options)["validation_results"]
    return result["errors"], result["warnings"]


def nwb_problems(path: Path) -> list[str]:
    """nwbinspector's findings of importance CRITICAL or BEST_PRACTICE_VIOLATION (suggestions are
    not failures), as one line each."""
    from nwbinspector import Importance, inspect_nwbfile
    return [f"{m.importance.name} {m.check_function_name} at {m.object_type} {m.location}: {m.message}"
            for m in inspect_nwbfile(nwbfile_path=str(path))
            if m.importance in (Importance.CRITICAL, Importance.BEST_PRACTICE_VIOLATION)]


def nwb_suggestions(path: Path) -> list[str]:
    from nwbinspector import Importance, inspect_nwbfile
    return [f"{m.check_function_name}: {m.message}" for m in inspect_nwbfile(nwbfile_path=str(path))
            if m.importance not in (Importance.CRITICAL, Importance.BEST_PRACTICE_VIOLATION)]


GEOJSON = "http://json.schemastore.org/geojson.json"
CAMTRAP = "https://raw.githubusercontent.com/tdwg/camtrap-dp/1.0.2/"


def camtrap_problems(zip_bytes: bytes, where: Path) -> list[str]:
    """frictionless's verdict on a Camtrap DP zip, against the official profile and table schemas.

    The package references the official URLs, as it must; offline, frictionless's HTTP session is
    given the copies in ``../shared/standards/camtrap-dp-1.0.2`` under those URLs, and GeoJSON's
    schema from the copy frictionless ships. The profile's one other remote ``$ref`` (the generic
    Data Package JSON Schema, of which no copy is kept) is left to frictionless's own Data Package
    checks.
    """
    import io
    import json
    import zipfile

    import frictionless
    import requests
    import urllib3

    from kit.videos import SHARED
    std = SHARED / "standards" / "camtrap-dp-1.0.2"
    profile = json.loads((std / "camtrap-dp-profile.json").read_text())
    profile["allOf"] = [part for part in profile["allOf"] if "$ref" not in part]
    served = {CAMTRAP + "camtrap-dp-profile.json": json.dumps(profile).encode(),
              GEOJSON: (Path(frictionless.__file__).parent / "assets" / "profiles" / "geojson.json").read_bytes()}
    for name in ("deployments", "media", "observations"):
        served[f"{CAMTRAP}{name}-table-schema.json"] = (std / f"{name}-table-schema.json").read_bytes()

    class LocalCopies(requests.adapters.HTTPAdapter):
        def send(self, request, **_kwargs):
            body = served.get(request.url, b"")
            status = 200 if request.url in served else 404
            raw = urllib3.response.HTTPResponse(body=io.BytesIO(body), status=status, preload_content=False,
                                                headers={"Content-Type": "application/json"})
            return self.build_response(request, raw)

    session = requests.Session()
    session.mount("https://", LocalCopies())
    session.mount("http://", LocalCopies())
    with zipfile.ZipFile(io.BytesIO(zip_bytes)) as z:
        z.extractall(where)
    with frictionless.system.use_context(http_session=session):
        report = frictionless.validate(str(where / "datapackage.json"))
    notes = [f"package: {e.type}: {e.note}" for e in report.errors]
    for task in report.tasks:
        notes += [f"{task.name}: {e.type}: {getattr(e, 'note', '')} (row {getattr(e, 'row_number', '-')}, "
                  f"field {getattr(e, 'field_name', '-')})" for e in task.errors]
    return notes
