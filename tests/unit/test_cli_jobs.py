import json

from click.testing import CliRunner

from kit.procs import settings_env
from wildswarm.cli import main


def invoke(settings, *args):
    env = settings_env(settings)
    return CliRunner().invoke(main, list(args), env={k: v for k, v in env.items() if k.startswith("WILDSWARM_")})


def test_status_table_filters_and_detail(db_settings, store):
    store.submit("0123456789abcdef", "fox.mp4")
    store.claim("0123456789abcdef", "w1", "n1")
    store.progress("0123456789abcdef", "w1", 5, 10)
    store.submit("fedcba9876543210", "owl.mp4")
    out = invoke(db_settings, "status")
    assert out.exit_code == 0, out.output
    header, row_owl, row_fox, counts = out.output.splitlines()
    assert header.split()[:3] == ["ID", "STATUS", "PROGRESS"]
    assert row_fox.split()[:5] == ["0123456789abcdef", "running", "50%", "1", "n1"] and row_fox.endswith("fox.mp4")
    assert row_owl.split()[1] == "pending"          # recorded, its message not confirmed yet
    assert counts == "queued 1  running 1  done 0  failed 0  cancelled 0"
    only = invoke(db_settings, "status", "--search", "FOX")
    assert "owl.mp4" not in only.output and "fox.mp4" in only.output
    detail = invoke(db_settings, "status", "0123456789abcdef")
    assert json.loads(detail.output)["progress"] == 0.5
    as_json = invoke(db_settings, "status", "--json", "--status", "queued")
    assert [j["id"] for j in json.loads(as_json.output)] == ["fedcba9876543210"]


def test_status_of_unknown_job_is_a_clean_error(db_settings, store):
    out = invoke(db_settings, "status", "fedcba9876543210")
    assert out.exit_code == 2 and "no job fedcba9876543210" in out.output


def test_status_without_a_job_store_is_a_clean_error(db_settings):
    out = invoke(db_settings.replace(db_port=1, db_timeout_seconds=1), "status")
    assert out.exit_code == 2 and "unreachable" in out.output and "Traceback" not in out.output


def test_submit_without_a_broker_records_the_job_to_be_queued_later(db_settings, store, tmp_path):
    video = tmp_path / "a.mp4"
    video.write_bytes(b"x")
    out = invoke(db_settings.replace(broker_port=1), "submit", str(video))
    assert out.exit_code == 0, out.output
    assert "queued when the broker answers" in out.output
    (job,) = store.list()
    assert job.publish_pending and (db_settings.data / "input" / "a.mp4").exists()


def test_deployments_are_added_and_listed_and_submit_keeps_one_with_the_recording_time(db_settings, store, tmp_path):
    out = invoke(db_settings, "deployments", "--add", "id=cam7", "--add", "latitude=52.1", "--add", "longitude=4.3",
                 "--add", "location_name=Dune edge")
    assert out.exit_code == 0 and "saved deployment cam7" in out.output, out.output
    listed = invoke(db_settings, "deployments")
    assert listed.output.startswith("cam7  Dune edge  (52.1, 4.3)")
    bad = invoke(db_settings, "deployments", "--add", "id=cam8", "--add", "latitude=95", "--add", "longitude=0")
    assert bad.exit_code == 2 and "latitude must be between -90 and 90" in bad.output
    video = tmp_path / "b.mp4"
    video.write_bytes(b"not a video, but the worker says so")
    out = invoke(db_settings.replace(broker_port=1), "submit", "--deployment", "cam7", "--recorded-at",
                 "2026-05-01T04:00:00Z", str(video))
    assert out.exit_code == 0, out.output
    (job,) = store.list()
    assert job.deployment_id == "cam7" and job.media == {"given_time": "2026-05-01T04:00:00+00:00"}
    unknown = invoke(db_settings.replace(broker_port=1), "submit", "--deployment", "nowhere", str(video))
    assert unknown.exit_code == 2 and "no deployment 'nowhere'" in unknown.output


def test_cancel_and_a_deployments_webhook_from_the_command_line(db_settings, store):
    store.submit("0123456789abcdef", "fox.mp4")
    out = invoke(db_settings, "cancel", "0123456789abcdef", "00000000000000ff")
    assert out.exit_code == 1 and "0123456789abcdef  fox.mp4  cancelled" in out.output and "no job" in out.output
    assert store.get("0123456789abcdef").status.value == "cancelled"
    out = invoke(db_settings, "deployments", "--add", "id=cam3", "--add", "webhook_url=https://lab.example.org/h?k=1")
    assert out.exit_code == 0 and "notifies https://lab.example.org/h" in out.output and "k=1" not in out.output
    from wildswarm.jobs.deployments import Deployments
    assert Deployments(store.db).webhooks() == {"cam3": "https://lab.example.org/h?k=1"}
    bad = invoke(db_settings, "deployments", "--add", "id=cam4", "--add", "webhook_url=ftp://x")
    assert bad.exit_code == 2 and "http:// or https://" in bad.output


def test_submit_into_a_data_root_without_input_makes_it_rather_than_a_traceback(db_settings, store, tmp_path):
    """On a fresh data root (no producer or web app has made input/ yet) the hard link into input/ failed,
    reported as 'the staged copy is gone', as a traceback: no job, and the copy thrown away."""
    fresh = db_settings.replace(data=tmp_path / "fresh")
    (tmp_path / "fresh").mkdir()
    video = tmp_path / "a.mp4"
    video.write_bytes(b"x")
    out = invoke(fresh.replace(broker_port=1), "submit", str(video))
    assert out.exit_code == 0, repr(out.exception)
    (job,) = store.list()
    assert (tmp_path / "fresh" / "input" / "a.mp4").exists() and job.input_name == "a.mp4"
