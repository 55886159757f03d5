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
