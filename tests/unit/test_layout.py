import os

import pytest

from wildswarm.errors import UnsafePathError
from wildswarm.layout import Layout, atomic_write, move_into, safe_name, stem_of


def test_ensure_creates_every_folder(tmp_path):
    lay = Layout(tmp_path / "root").ensure()
    for name in ("input", "input_done", "input_failed", "output", "jobs", "models", "logs"):
        assert (tmp_path / "root" / name).is_dir()
    assert lay.ensure() == lay  # idempotent


@pytest.mark.parametrize("raw, clean", [
    ("clip.mp4", "clip.mp4"),
    ("../../etc/passwd", "passwd"),
    ("a b;rm -rf.mp4", "a_b_rm_-rf.mp4"),
    (".hidden.mp4", "hidden.mp4"),
    ("Zèbre.MP4", "Zebre.MP4"),
    ("C:\\x\\y.mp4", "y.mp4"),
])
def test_safe_name(raw, clean):
    assert safe_name(raw) == clean


def test_safe_name_refuses_nothing_left():
    with pytest.raises(UnsafePathError):
        safe_name("../..")


def test_long_names_keep_extension():
    name = safe_name("x" * 500 + ".mp4")
    assert len(name) <= 120 and name.endswith(".mp4")


def test_inside_rejects_escape(tmp_path):
    lay = Layout(tmp_path)
    assert lay.inside(lay.input / "a.mp4") == (tmp_path / "input" / "a.mp4").resolve()
    with pytest.raises(UnsafePathError):
        lay.inside(lay.input / ".." / ".." / "x")


def test_unique_input_avoids_every_taken_name(tmp_path):
    lay = Layout(tmp_path).ensure()
    assert lay.unique_input("a.mp4").name == "a.mp4"
    (lay.input / "a.mp4").write_bytes(b"1")
    (lay.input_done / "a-1.mp4").write_bytes(b"1")
    (lay.output / "a-2").mkdir()
    assert lay.unique_input("a.mp4").name == "a-3.mp4"
    assert stem_of("dir/../a b.mp4") == "a_b"


def test_job_file_checks_the_id(tmp_path):
    lay = Layout(tmp_path)
    assert lay.job_file("0123456789abcdef").name == "0123456789abcdef.json"
    with pytest.raises(UnsafePathError):
        lay.job_file("../x")


def test_log_appends_lines(tmp_path):
    lay = Layout(tmp_path)
    lay.log("node-1", "first")
    lay.log("node-1", "second")
    lines = (tmp_path / "logs" / "node-1.log").read_text().splitlines()
    assert [line.split(" ", 3)[3] for line in lines] == ["first", "second"]


def test_atomic_write_leaves_no_temp(tmp_path):
    atomic_write(tmp_path / "f.json", "{}")
    atomic_write(tmp_path / "f.json", b"[]")
    assert os.listdir(tmp_path) == ["f.json"] and (tmp_path / "f.json").read_text() == "[]"


def test_move_into_never_overwrites(tmp_path):
    src_dir, dest = tmp_path / "in", tmp_path / "done"
    src_dir.mkdir()
    (src_dir / "a.mp4").write_bytes(b"first")
    assert move_into(src_dir / "a.mp4", dest, "tag").name == "a.mp4"
    (src_dir / "a.mp4").write_bytes(b"second")
    assert move_into(src_dir / "a.mp4", dest, "tag").name == "a-tag.mp4"
    assert (dest / "a.mp4").read_bytes() == b"first"
    assert move_into(src_dir / "a.mp4", dest, "tag") is None   # already gone
    assert not any(src_dir.iterdir())


def test_claim_input_never_overwrites(tmp_path):
    layout = Layout(tmp_path).ensure()
    (layout.input / "v.mp4").write_bytes(b"first")
    src = tmp_path / "staged"
    src.write_bytes(b"second")
    dest = layout.claim_input(src, "v.mp4")
    assert dest.name == "v-1.mp4" and dest.read_bytes() == b"second" and not src.exists()
    assert (layout.input / "v.mp4").read_bytes() == b"first"
    again = tmp_path / "again"
    again.write_bytes(b"third")
    (layout.input / "v.mp4").unlink()
    assert layout.claim_input(again, "v.mp4", exact_first=True).name == "v.mp4"
