import errno
import os

import pytest

from wildswarm.errors import UnsafePathError
from wildswarm.layout import Layout, atomic_write, move_into, safe_name, stem_of


def test_ensure_creates_every_folder(tmp_path):
    lay = Layout(tmp_path / "root").ensure()
    for name in ("input", "input_done", "input_failed", "output", "uploads", "models", "logs"):
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


def test_log_appends_lines(tmp_path):
    lay = Layout(tmp_path)
    lay.log("node-1", "first")
    lay.log("node-1", "second")
    lines = (tmp_path / "logs" / "node-1.log").read_text().splitlines()
    assert [line.split(" ", 3)[3] for line in lines] == ["first", "second"]


def test_a_log_line_stays_one_line_whatever_it_quotes(tmp_path):
    """A file name dropped into input/ (by scp: nobody checks it first) is quoted in the node log; a line
    break inside it, ASCII or Unicode, must not start a line of its own there or on the logs page."""
    lay = Layout(tmp_path)
    for breaker in ("\n", "\r", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029"):
        lay.log("node-1", f"queued a{breaker}2026-12-06 12:00:00 node-1 job forged.mp4")
    text = (tmp_path / "logs" / "node-1.log").read_text(encoding="utf-8")
    lines = text.splitlines()
    assert len(lines) == 10 and text.count("\n") == 10
    assert all(line.endswith("job forged.mp4") and "queued a" in line for line in lines)


def test_a_node_log_is_bounded_however_many_lines_a_long_lived_node_writes(tmp_path, monkeypatch):
    """Audit: every process appended to ``logs/<node>.log`` for as long as the stack ran, and nothing ever
    trimmed it: a worker writes ~300 bytes a video (a line per segment of a long one), so a node's log
    grew by the gigabyte on the shared filesystem over months, though the logs page reads only its last
    256 KiB. Past ``LOG_KEEP_BYTES`` a log starts afresh, the lines before kept in ``<node>.log.1``."""
    import wildswarm.layout as layout_module
    cap = 4096
    monkeypatch.setattr(layout_module, "LOG_KEEP_BYTES", cap, raising=False)
    lay = Layout(tmp_path)
    for n in range(1000):                       # ~70 KiB of lines, 17 times the cap
        lay.log("worker-1", f"job {n:016x} fox-{n}.mp4: done")
    logs = tmp_path / "logs"
    held = sum(p.stat().st_size for p in logs.iterdir())
    assert held <= 2 * cap + 200, f"{held} bytes of node logs kept for a cap of {cap}"
    assert sorted(p.name for p in logs.iterdir()) == ["worker-1.log", "worker-1.log.1"]
    current = (logs / "worker-1.log").read_text().splitlines()
    before = (logs / "worker-1.log.1").read_text().splitlines()
    assert current[-1].endswith("fox-999.mp4: done")                    # the newest line, where the page looks
    assert len(before) > 20 and before[-1].split(" ")[4] == f"{int(current[0].split(' ')[4], 16) - 1:016x}"


def test_atomic_write_leaves_no_temp(tmp_path):
    atomic_write(tmp_path / "f.json", "{}")
    atomic_write(tmp_path / "f.json", b"[]")
    assert os.listdir(tmp_path) == ["f.json"] and (tmp_path / "f.json").read_text() == "[]"


def test_atomic_write_on_a_full_disk_leaves_nothing_behind(tmpfs):
    """Audit: its temporary file stayed behind when the write failed (a real ENOSPC here)."""
    atomic_write(tmpfs.path / "f.json", "{}")
    tmpfs.fill()
    with pytest.raises(OSError) as caught:
        atomic_write(tmpfs.path / "f.json", "x" * (1 << 20))
    assert caught.value.errno == errno.ENOSPC
    assert sorted(os.listdir(tmpfs.path)) == [".filler", "f.json"]
    assert (tmpfs.path / "f.json").read_text() == "{}"


def test_log_lines_are_best_effort_on_a_read_only_filesystem(tmpfs):
    lay = Layout(tmpfs.path)
    assert lay.log("node-1", "first") is True
    tmpfs.read_only()
    assert lay.log("node-1", "second") is False          # no exception: a log line never fails the work
    tmpfs.read_write()
    assert (tmpfs.path / "logs" / "node-1.log").read_text().count("\n") == 1


def test_claim_input_of_a_vanished_file_says_so_and_takes_no_name(tmp_path):
    layout = Layout(tmp_path).ensure()
    with pytest.raises(FileNotFoundError, match="is gone"):
        layout.claim_input(tmp_path / "never-there.mp4", "v.mp4", exact_first=True)
    assert not any(layout.input.iterdir())


def test_staging_paths_are_hidden_in_uploads(tmp_path):
    layout = Layout(tmp_path)
    a, b = layout.staging_path("../x y.mp4"), layout.staging_path("x y.mp4")
    assert a.parent == b.parent == layout.uploads and a != b
    assert a.name.startswith(".") and a.name.endswith("x_y.mp4")


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


def test_stale_part_files_are_swept_and_nothing_else(tmp_path):
    import time
    layout = Layout(tmp_path).ensure()
    old_part, old_copy = layout.uploads / ".upload-a.part", layout.uploads / ".incoming-b-x.mp4"
    fresh, other = layout.uploads / ".upload-c.part", layout.uploads / "notes.txt"
    for p in (old_part, old_copy, fresh, other):
        p.write_bytes(b"x")
    t = time.time() - 7200
    for p in (old_part, old_copy, other):
        os.utime(p, (t, t))
    (layout.uploads / ".upload-link.part").symlink_to(tmp_path / "elsewhere")
    assert layout.sweep_uploads(3600) == 2
    assert sorted(p.name for p in layout.uploads.iterdir()) == [".upload-c.part", ".upload-link.part", "notes.txt"]


def _age(path, seconds):
    import time
    t = time.time() - seconds
    os.utime(path, (t, t), follow_symlinks=False)


def test_what_a_killed_model_fetch_export_or_quantization_left_is_swept_and_nothing_else(tmp_path):
    """A `wildswarm models fetch`, an ONNX export or an int8 quantization killed midway leaves its
    temporary folder (hundreds of MB of weights) beside the models; an atomic write killed midway,
    its temporary file. Those untouched for long are removed; a sibling's live ones, the weights,
    the lock and the exports stay."""
    from wildswarm.leftovers import sweep_leftovers
    models, cache = tmp_path / "models", tmp_path / "cache"
    (cache / "openvino" / "t2").mkdir(parents=True)
    (cache / "exports").mkdir()
    old = [models / ".fetch-abc", models / ".export-def", cache / "exports" / ".int8-ghi",
           cache / "exports" / ".export-jkl"]
    for d in old:
        d.mkdir(parents=True)
        (d / "md_v5a.pt").write_bytes(b"w" * 100)
        (d / "md_v5a.onnx.json.tmp").write_text("{}")
    live = models / ".fetch-live"                  # another node's download: its file still grows
    live.mkdir()
    (live / "md_v5a.pt").write_bytes(b"w")
    stale_files = [models / ".md_v5a.pt.k2j3.tmp", models / ".weights.lock.json.x1.tmp",
                   cache / ".backends-q9", cache / "openvino" / "t2" / ".net.blob.123.tmp"]
    kept = [models / "md_v5a.pt", models / "weights.lock.json", cache / "exports" / "md_v5a.onnx",
            cache / "exports" / "md_v5a.onnx.json", cache / "backends.json", models / "notes.tmp",
            cache / "openvino" / "t2" / "net.blob"]
    for p in stale_files + kept:
        p.write_bytes(b"x")
    for p in old + [live] + stale_files + kept:
        for q in ([p, *p.rglob("*")] if p.is_dir() else [p]):
            _age(q, 7 * 3600)
    (live / "md_v5a.pt").write_bytes(b"ww")        # touched just now
    _age(live, 7 * 3600)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "keep.pt").write_bytes(b"x")
    (models / ".export-link").symlink_to(outside)  # never followed, never removed through
    _age(models / ".export-link", 7 * 3600)
    fresh = cache / ".backends-now"
    fresh.write_bytes(b"x")

    assert sweep_leftovers([models, cache, tmp_path / "missing"], older_than=6 * 3600) == len(old) + len(stale_files)
    assert not any(p.exists() for p in old + stale_files)
    assert all(p.exists() for p in kept + [live / "md_v5a.pt", fresh, outside / "keep.pt"])


def test_a_read_only_models_folder_is_not_swept_and_not_an_error(tmpfs):
    """Workers mount models/ read-only: their sweep removes nothing there, quietly."""
    from wildswarm.leftovers import sweep_leftovers
    (tmpfs.path / ".fetch-abc").mkdir()
    (tmpfs.path / ".fetch-abc" / "w.pt").write_bytes(b"x")
    (tmpfs.path / ".w.pt.k2.tmp").write_bytes(b"x")
    for p in (tmpfs.path / ".fetch-abc" / "w.pt", tmpfs.path / ".fetch-abc", tmpfs.path / ".w.pt.k2.tmp"):
        _age(p, 7 * 3600)
    tmpfs.read_only()
    assert sweep_leftovers([tmpfs.path], older_than=3600) == 0
    assert (tmpfs.path / ".fetch-abc" / "w.pt").exists() and (tmpfs.path / ".w.pt.k2.tmp").exists()


def test_a_failed_input_with_a_name_near_the_limit_is_found_where_it_was_moved(tmp_path):
    """move_into shortens a long stem to fit its ``-<tag>`` when the name is taken in input_failed/; looking
    for the job's input there used the whole stem, so that file was never found again (a refusal recorded
    under the name dropped, its file left behind when the job was deleted)."""
    from types import SimpleNamespace
    lay = Layout(tmp_path).ensure()
    stem = "Standort 14 Nordhang Dachs am Bau " + "x" * 215
    name = f"{stem}.txt"
    assert len(os.fsencode(name)) == 253
    (lay.input_failed / name).write_text("another file of that name, refused before")
    (lay.input / name).write_text("notes")
    moved = move_into(lay.input / name, lay.input_failed, "0123abcd")
    assert moved.name != name and len(os.fsencode(moved.name)) <= 255
    (lay.input_failed / name).unlink()
    job = SimpleNamespace(input_name=name, id="0123abcd" + "0" * 8)
    assert lay.failed_input(job) == moved
