import json

import pytest

from wildswarm.errors import MessageError
from wildswarm.messages import SCHEMA_VERSION, JobMessage


def test_round_trip():
    msg = JobMessage("0123456789abcdef", "clip.mp4")
    again = JobMessage.decode(msg.encode())
    assert again == msg
    assert again.version == SCHEMA_VERSION


def test_is_frozen():
    msg = JobMessage("0123456789abcdef", "clip.mp4")
    with pytest.raises(AttributeError):
        msg.job_id = "ffffffffffffffff"


@pytest.mark.parametrize("body, reason", [
    (b"\xff\xfe", "UTF-8 JSON"),
    (b"not json", "UTF-8 JSON"),
    (b"[1, 2]", "JSON object"),
    (b'{"job_id": "0123456789abcdef"}', "lacks fields"),
    (b'{"job_id": "0123456789abcdef", "input_name": "a.mp4", "version": 1, "x": 1}', "unknown"),
    (b'{"job_id": "0123456789abcdef", "input_name": "a.mp4", "version": 99}', "version"),
    (b'{"job_id": "ZZZ", "input_name": "a.mp4", "version": 1}', "job_id"),
    (b'{"job_id": "0123456789abcdef", "input_name": "../etc/passwd", "version": 1}', "plain file name"),
    (b'{"job_id": "0123456789abcdef", "input_name": ".hidden", "version": 1}', "plain file name"),
    (b'{"job_id": "0123456789abcdef", "input_name": "a.mp4", "version": 1, "submitted_at": 5}', "string"),
    # audit: a name with a NUL or of 5,000 characters passed validation
    (b'{"job_id": "0123456789abcdef", "input_name": "a\\u0000b.mp4", "version": 1}', "plain file name"),
    (b'{"job_id": "0123456789abcdef", "input_name": "a\\nb.mp4", "version": 1}', "plain file name"),
    (b'{"job_id": "0123456789abcdef", "input_name": "' + b"x" * 5000 + b'.mp4", "version": 1}', "plain file name"),
    (b'{"job_id": "0123456789abcdef", "input_name": "a.mp4", "version": 1, "submitted_at": "'
     + b"t" * 5000 + b'"}', "submitted_at"),
    (b'{"job_id": "0123456789abcdef", "input_name": "..", "version": 1}', "plain file name"),
    (b"{" + b'"pad": "' + b"x" * 70000 + b'"}', "too large"),
    # audit: JSON nested deeper than the interpreter's recursion limit raised RecursionError, not MessageError
    (b"[" * 60000, "UTF-8 JSON"),
    (b'{"job_id": ' + b"[" * 60000, "UTF-8 JSON"),
])
def test_malformed_messages_raise_one_named_error(body, reason):
    with pytest.raises(MessageError, match=reason):
        JobMessage.decode(body)


def test_encoding_is_plain_sorted_json():
    data = json.loads(JobMessage("0123456789abcdef", "a.mp4", submitted_at="t").encode())
    assert data == {"job_id": "0123456789abcdef", "input_name": "a.mp4", "submitted_at": "t",
                    "version": SCHEMA_VERSION}
