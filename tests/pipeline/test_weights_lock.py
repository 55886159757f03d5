"""The lock file beside the weights: format, atomic writes, concurrent writers."""
import json
import multiprocessing
import os
import time

import pytest

from wildswarm.errors import ModelError
from wildswarm.pipeline import weights_lock


def entry(n: int, model: str = "m") -> weights_lock.Entry:
    return weights_lock.Entry(file=f"{model}-{n}.pt", model=model, sha256=f"{n:064x}", size=n,
                              source="a test", when=weights_lock.now(), how="trusted-by-hand")


def test_an_absent_lock_is_empty(tmp_path):
    assert weights_lock.read(tmp_path) == {}
    assert weights_lock.read(tmp_path / "no such folder") == {}


def test_record_writes_one_readable_json_file(tmp_path):
    first, second = entry(1), entry(2)
    weights_lock.record(tmp_path, first)
    weights_lock.record(tmp_path, second)
    data = json.loads((tmp_path / "weights.lock.json").read_text())
    assert data["format"] == "wildswarm-weights-lock/1"
    assert set(data["files"]) == {"m-1.pt", "m-2.pt"}
    assert data["files"]["m-1.pt"] == {"model": "m", "sha256": f"{1:064x}", "size": 1, "source": "a test",
                                       "when": first.when, "how": "trusted-by-hand"}
    assert weights_lock.read(tmp_path) == {"m-1.pt": first, "m-2.pt": second}
    # written atomically, never group- or world-writable, nothing left behind
    assert sorted(p.name for p in tmp_path.iterdir()) == ["weights.lock.json"]
    assert (tmp_path / "weights.lock.json").stat().st_mode & 0o777 == 0o644


def test_an_unreadable_lock_is_a_clear_error(tmp_path):
    (tmp_path / "weights.lock.json").write_text("{not json")
    with pytest.raises(ModelError, match="weights.lock.json.*cannot be read"):
        weights_lock.read(tmp_path)
    (tmp_path / "weights.lock.json").write_text(json.dumps({"format": "wildswarm-weights-lock/1",
                                                            "files": {"x.pt": {"how": "magic"}}}))
    with pytest.raises(ModelError, match="x.pt"):
        weights_lock.read(tmp_path)


def _writer(folder: str, model: str, count: int, start) -> None:
    start.wait()
    for n in range(count):
        weights_lock.record(folder, entry(n, model))


def test_concurrent_writers_lose_no_entry(tmp_path):
    ctx = multiprocessing.get_context("fork")
    start = ctx.Barrier(2)
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), model, 40, start)) for model in ("a", "b")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    files = weights_lock.read(tmp_path)
    assert len(files) == 80, f"lost entries: {sorted(set(f'{m}-{n}.pt' for m in 'ab' for n in range(40)) - set(files))}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["weights.lock.json"]


def test_a_stale_mutex_left_by_a_crash_is_broken(tmp_path):
    mutex = tmp_path / weights_lock.MUTEX_NAME
    mutex.write_text("12345@gone\n")
    old = time.time() - weights_lock.STALE_S - 5
    os.utime(mutex, (old, old))
    weights_lock.record(tmp_path, entry(1))
    assert "m-1.pt" in weights_lock.read(tmp_path) and not mutex.exists()


def test_a_held_mutex_times_out_with_a_clear_error(tmp_path, monkeypatch):
    (tmp_path / weights_lock.MUTEX_NAME).write_text("12345@busy\n")
    monkeypatch.setattr(weights_lock, "WAIT_S", 0.3)
    with pytest.raises(ModelError, match="12345@busy"):
        weights_lock.record(tmp_path, entry(1))
    assert weights_lock.read(tmp_path) == {}
