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
