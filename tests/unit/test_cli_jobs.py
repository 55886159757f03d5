import json

from click.testing import CliRunner

from wildswarm.cli import main
from wildswarm.jobs import Job, JobStatus, JobStore
from wildswarm.layout import Layout


def test_status_table_and_detail(tmp_path):
    store = JobStore(Layout(tmp_path).ensure())
    store.save(Job(id="0123456789abcdef", input_name="fox.mp4", status=JobStatus.RUNNING,
                   frames_done=5, frames_total=10, node="n1", attempts=1))
    runner = CliRunner()
    out = runner.invoke(main, ["--data", str(tmp_path), "status"])
    assert out.exit_code == 0, out.output
    header, row = out.output.splitlines()
    assert header.split()[:3] == ["ID", "STATUS", "PROGRESS"]
    assert row.split()[:5] == ["0123456789abcdef", "running", "50%", "1", "n1"] and row.endswith("fox.mp4")
    detail = runner.invoke(main, ["--data", str(tmp_path), "status", "0123456789abcdef"])
    assert json.loads(detail.output)["progress"] == 0.5
    as_json = runner.invoke(main, ["--data", str(tmp_path), "status", "--json"])
    assert json.loads(as_json.output)[0]["id"] == "0123456789abcdef"


def test_status_of_unknown_job_is_a_clean_error(tmp_path):
    out = CliRunner().invoke(main, ["--data", str(tmp_path), "status", "fedcba9876543210"])
    assert out.exit_code == 2 and "no job fedcba9876543210" in out.output


def test_submit_refuses_without_broker_cleanly(tmp_path, monkeypatch):
    video = tmp_path / "a.mp4"
    video.write_bytes(b"x")
    monkeypatch.setenv("WILDSWARM_BROKER_PORT", "1")
    out = CliRunner().invoke(main, ["--data", str(tmp_path / "d"), "submit", str(video)])
    assert out.exit_code == 2 and "cannot connect" in out.output
    assert not (tmp_path / "d" / "input" / "a.mp4").exists()
