"""Export options are checked when they are made: the NWB subject took any keys and values, and
pynwb's Subject(**subject) then raised TypeError mid-export (a 500 on the web, a traceback at the CLI)."""
from __future__ import annotations

import re

import pytest

from wildswarm.errors import ExportError
from wildswarm.exporters.base import SUBJECT_FIELDS, ExportOptions


@pytest.mark.parametrize("subject, words", [
    ({"colour": "red"}, "unknown subject field(s): colour"),
    ({"age": 5}, "subject age must be text"),
    ({"species": ["Mus musculus"]}, "subject species must be text"),
    ("Mus musculus", "subject must be an object"),
])
def test_a_subject_of_unknown_fields_or_values_not_text_is_refused(subject, words):
    with pytest.raises(ExportError, match=re.escape(words)):
        ExportOptions(subject=subject)


def test_a_subject_of_nwb_fields_is_taken_as_given():
    given = {"species": "Mus musculus", "sex": "F", "age": "P90D", "strain": "C57BL/6J"}
    assert ExportOptions(subject=given).subject == given
    assert {"species", "sex", "age", "description", "genotype", "strain", "weight"} <= set(SUBJECT_FIELDS)


@pytest.mark.parametrize("target", ["missing-folder/batch.json", ""])
def test_an_export_to_a_path_that_cannot_be_written_is_one_line_not_a_traceback(tmp_path, target):
    """-o into a folder that does not exist (or on a read-only or full filesystem) raised OSError out of the
    command, and -o '' a ValueError."""
    import json

    from click.testing import CliRunner

    from wildswarm.cli import main
    folder = tmp_path / "fox"
    folder.mkdir()
    (folder / "summary.json").write_text(json.dumps({"video": "fox.mp4"}))
    result = CliRunner().invoke(main, ["--data", str(tmp_path / "data"), "export", "--format", "md-json",
                                       "-o", str(tmp_path / target) if target else "", str(folder)])
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit) and "error:" in result.output
    assert not list(tmp_path.rglob("*.part"))
