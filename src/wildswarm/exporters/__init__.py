"""Results in the field's own formats: one module per format, each a converter of the canonical
result the pipeline wrote once (house rule 13), behind one interface (:mod:`.base`).

    from wildswarm.exporters import get
    get("nwb").write(results, out, ExportOptions(...))

The modules are imported when asked for, so the web app pays for NWB's libraries only when a user
exports NWB.
"""
from __future__ import annotations

from importlib import import_module

from wildswarm.errors import ExportError

#: format name -> module:class, in the order they are offered.
FORMATS = {
    "md-json": "mdjson:MegaDetectorJSON",
    "camtrap-dp": "camtrap_dp:CamtrapDP",
    "nwb": "nwb:NWB",
    "csv": "csvfiles:CSVTables",
    "mot": "mot:MOTChallenge",
}


def get(name: str):
    """The exporter of format ``name``."""
    try:
        module, cls = FORMATS[name].split(":")
    except KeyError:
        raise ExportError(f"no export format {name!r}; there are: {', '.join(FORMATS)}") from None
    return getattr(import_module(f"{__name__}.{module}"), cls)()
