"""The pytest fixtures shared by every tier of tests (loaded by tests/conftest.py as a plugin).

Services: ``services`` (session: the real RabbitMQ and PostgreSQL, see ``kit.services``),
``db_settings`` (a test's own schema in the job store and data root), ``store`` (a
:class:`JobStore` on it), ``broker_base`` / ``broker_settings`` / ``broker`` (a test's own
queue on the real broker), ``spawn`` (wildswarm subprocesses, ended after the test).
Media and models: ``make_video``, ``seed_videos``, ``untrained_models_dir``, ``untrained_settings``.
Benchmarks: ``system_tmp`` (the folder ``tempfile`` hands out, to check that a run leaves nothing there).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from kit.net import free_port
from kit.procs import Proc, settings_env
from kit.services import (COMPOSE_FILE, Services, broker_alarms, broker_answers, compose, db_answers,
                          host_services, write_secrets)
from kit.videos import SEED_VIDEOS, write_video
from kit.waiting import wait_for
from wildswarm.broker import Broker
from wildswarm.config import Settings
from wildswarm.errors import BrokerError
from wildswarm.layout import Layout

TEST_AID = "wildswarm.testing:SleepAnalyzer"
SESSION_SERVICES: list[Services] = []       # the session's services, once up (for failure reports)


# --- pytest-docker: the project's own images, on ports chosen here ------------------------------
@pytest.fixture(scope="session")
def docker_compose_command() -> str:
    return "docker-compose"          # Debian's v1.29 (scripts/docker-local.sh installs it)


@pytest.fixture(scope="session")
def docker_compose_project_name() -> str:
    return f"wildswarm-test-{os.getpid()}"


@pytest.fixture(scope="session")
def _service_ports(tmp_path_factory) -> dict[str, str]:
    ports = {"WILDSWARM_TEST_AMQP_PORT": free_port(), "WILDSWARM_TEST_AMQP_HTTP_PORT": free_port(),
             "WILDSWARM_TEST_DB_PORT": free_port()}
    secrets_dir = tmp_path_factory.mktemp("service-secrets")
    broker_pw, db_pw = write_secrets(secrets_dir)
    env = {k: str(v) for k, v in ports.items()} | {"WILDSWARM_TEST_SECRETS": str(secrets_dir)}
    os.environ.update(env)           # docker-compose substitutes them into kit/compose.yml
    return env | {"broker_password": broker_pw, "db_password": db_pw}


@pytest.fixture(scope="session")
def docker_compose_file(_service_ports) -> str:
    return str(COMPOSE_FILE)


@pytest.fixture(scope="session")
def docker_setup() -> list[str]:
    return ["up -d"]


@pytest.fixture(scope="session")
def docker_cleanup() -> list[str]:
    return ["down -v -t 5"]


@pytest.fixture(scope="session")
def services(request) -> Services:
    """The real RabbitMQ and PostgreSQL (containers, or this machine's: see kit.services)."""
    if os.environ.get("WILDSWARM_TEST_SERVICES") == "host":
        found = host_services()
    else:
        env = request.getfixturevalue("_service_ports")
        docker_services = request.getfixturevalue("docker_services")
        project = request.getfixturevalue("docker_compose_project_name")

        def restarter(service: str):
            def restart(down_seconds: float = 1.0) -> None:
                compose(project, "stop", "-t", "20", service)
                time.sleep(down_seconds)
                compose(project, "start", service)
            return restart

        found = Services(int(env["WILDSWARM_TEST_AMQP_PORT"]), int(env["WILDSWARM_TEST_AMQP_HTTP_PORT"]),
                         env["broker_password"], int(env["WILDSWARM_TEST_DB_PORT"]), env["db_password"],
                         restart={"rabbitmq": restarter("rabbitmq"), "postgres": restarter("postgres")})
        docker_services.wait_until_responsive(lambda: db_answers(found.settings()), timeout=120, pause=0.5)
        docker_services.wait_until_responsive(lambda: broker_answers(found.settings()), timeout=180, pause=1)
    for what, ok in (("RabbitMQ", broker_answers), ("PostgreSQL", db_answers)):
        if not ok(found.settings()):
            pytest.fail(f"the test {what} does not answer (WILDSWARM_TEST_SERVICES="
                        f"{os.environ.get('WILDSWARM_TEST_SERVICES', 'containers')})")
    alarms = broker_alarms(found)
    if alarms:
        pytest.fail("the test RabbitMQ blocks every publisher: " + "; ".join(alarms))
    SESSION_SERVICES[:] = [found]
    return found


# --- the job store --------------------------------------------------------------------------------
@pytest.fixture
def db_settings(services, tmp_path) -> Settings:
    """Settings for one test: its own schema in the job store, its own data root and queue."""
    from wildswarm.jobs.db import Database
    settings = services.settings(
        data=tmp_path / "data", node="test", db_schema=f"t_{uuid.uuid4().hex[:12]}", db_pool_size=4,
        queue=f"wildswarm.test.{uuid.uuid4().hex[:10]}", lease_seconds=4.0, retry_delay_seconds=1.0,
        reconcile_seconds=0.5, republish_after_seconds=2.0, settle_seconds=0.3, poll_seconds=0.1,
        stop_grace_seconds=10.0, delivery_limit=3, worker_metrics_port=-1, producer_metrics_port=-1)
    Layout(settings.data).ensure()
    yield settings
    db = Database(settings, max_size=1)
    try:
        db.drop_schema()
    finally:
        db.close()


@pytest.fixture
def store(db_settings):
    from wildswarm.jobs import JobStore
    s = JobStore.connect(db_settings)
    yield s
    s.close()


# --- the broker -------------------------------------------------------------------------------------
@pytest.fixture
def broker_settings(db_settings) -> Settings:
    """A test's settings with the test aid analyser (no models); its queues deleted afterwards."""
    settings = db_settings.replace(analyzer=TEST_AID)
    yield settings
    broker = Broker(settings)
    try:
        broker.connect(declare=False)
        broker.delete_topology()
    except BrokerError:
        pass
    finally:
        broker.close()


@pytest.fixture
def broker(broker_settings):
    """A connected :class:`Broker` on the test's queue (topology declared)."""
    b = Broker(broker_settings).connect()
    yield b
    b.close()


@pytest.fixture
def intake(broker_settings, store):
    """The one way in (as ``wildswarm submit`` uses it), publishing to the real broker."""
    from wildswarm.publisher import Publisher
    from wildswarm.intake import Intake
    publisher = Publisher(broker_settings, "test")
    yield Intake(broker_settings, store, publisher)
    publisher.close()


@pytest.fixture
def restart_broker(services):
    """``restart_broker(down_seconds=1)``: stop RabbitMQ and start it again (its queues recovered from disk)."""
    def restart(down_seconds: float = 1.0) -> None:
        services.restart["rabbitmq"](down_seconds)
        wait_for(lambda: broker_answers(services.settings()), 120, "the broker to accept connections again", 0.5)
    return restart


@pytest.fixture
def restart_db(services):
    """``restart_db(down_seconds=1)``: stop PostgreSQL and start it again."""
    def restart(down_seconds: float = 1.0) -> None:
        services.restart["postgres"](down_seconds)
        wait_for(lambda: db_answers(services.settings()), 120, "PostgreSQL to accept connections again", 0.5)
    return restart


@pytest.fixture
def spawn(tmp_path):
    """``spawn(settings, "worker", node="w1")``: start ``python -m wildswarm ...``; ended after the test."""
    procs: list[Proc] = []

    def start(settings: Settings, *args: str, node: str | None = None, **env_extra) -> Proc:
        node = node or f"{args[0]}-{len(procs)}"
        log = tmp_path / f"{node}.out"
        env = settings_env(settings.replace(node=node), **env_extra)
        with open(log, "wb") as out:
            popen = subprocess.Popen([sys.executable, "-m", "wildswarm", *args], env=env, cwd=tmp_path,
                                     stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        proc = Proc(popen, log, node)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        proc.stop()


# --- real faults ----------------------------------------------------------------------------------------
@pytest.fixture
def tmpfs(tmp_path):
    """A small tmpfs of this test's, at ``tmpfs.path``, to turn read-only or fill (needs root)."""
    from kit.faults import Tmpfs, require_mount
    require_mount()
    fs = Tmpfs(tmp_path / "tmpfs").mount()
    yield fs
    fs.unmount()


# --- what a run leaves behind ---------------------------------------------------------------------------
@pytest.fixture
def system_tmp(monkeypatch):
    """The folder that ``tempfile`` hands out during this test, in this process and (``TMPDIR``) in its
    subprocesses: a benchmark's stand-in models are hundreds of MB, and what a run leaves there stays
    on the machine of everyone who runs it. Its path is short (a Unix socket's path must fit in 108
    bytes, and Chromium puts its own under ``$TMPDIR``; pytest's tmp_path is too long), and it is
    removed after the test."""
    folder = Path(tempfile.mkdtemp(prefix="ws-t-"))
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    monkeypatch.setenv("TMPDIR", str(folder))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


# --- media and models ---------------------------------------------------------------------------------
@pytest.fixture
def make_video(tmp_path):
    def make(name: str = "clip.mp4", **kwargs) -> Path:
        return write_video(tmp_path / name, **kwargs)
    return make


@pytest.fixture(scope="session")
def seed_videos() -> list[Path]:
    """The two real camera-trap videos beside the checkout (WILDSWARM_SEED_VIDEOS)."""
    folder = SEED_VIDEOS
    videos = sorted(folder.glob("*.mp4")) if folder.is_dir() else []
    if not videos:
        pytest.skip(f"seed videos not found in {folder} (set WILDSWARM_SEED_VIDEOS to their folder)")
    return videos


@pytest.fixture(scope="session")
def untrained_models_dir(tmp_path_factory) -> Path:
    """A models folder with untrained stand-ins of the default detector and both pose models."""
    from wildswarm.pipeline import models as cat
    folder = tmp_path_factory.mktemp("models")
    for name in ("MDV6-yolov9-c", "superanimal_quadruped", "superanimal_topviewmouse", "AI4GSnapshotSerengeti"):
        cat.build_untrained(folder, cat.spec(name))
    return folder


@pytest.fixture
def untrained_settings(untrained_models_dir, tmp_path) -> Settings:
    """A small, fast pipeline configuration on untrained weights.

    Random detector weights score every box near 0.004, so the threshold is
    lowered to let boxes reach the pose model: the real code runs end to end.
    """
    return Settings(data=tmp_path / "data", models_dir=untrained_models_dir, untrained=True, device="cpu",
                    detection_threshold=0.001, max_animals=2, detector_image_size=320, fps=5, batch_size=4,
                    backend_cache=untrained_models_dir.parent / "backend-cache")


__all__ = ["wait_for"]


@pytest.fixture(scope="session")
def seed_results(seed_videos, untrained_models_dir, tmp_path_factory) -> list[Path]:
    """Real pipeline results of the seed videos, made once a session: the result folders.

    Untrained weights (the detector's threshold lowered so boxes reach the pose model, the tracker
    and the species classifier, which is on), so every output holds real structure."""
    from wildswarm.pipeline.run import Pipeline
    out = tmp_path_factory.mktemp("seed-results")
    s = Settings(data=out / "data", models_dir=untrained_models_dir, untrained=True, device="cpu",
                 detection_threshold=0.001, max_animals=2, detector_image_size=320, fps=5, batch_size=4,
                 classifier="AI4GSnapshotSerengeti", pose="superanimal_quadruped",
                 backend_cache=untrained_models_dir.parent / "backend-cache")
    pipeline = Pipeline(s)
    return [pipeline.analyze(video, out, name=video.stem).output_dir for video in seed_videos]
