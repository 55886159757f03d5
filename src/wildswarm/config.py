"""Settings: the one place that reads the environment.

Every other module receives a :class:`Settings`. Each field ``x`` is read from
``WILDSWARM_X``; secrets may instead be given as a file path in
``WILDSWARM_X_FILE`` (Docker secrets), which wins when both are set.
"""
from __future__ import annotations

import dataclasses
import math
import os
import re
import socket
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Mapping

from wildswarm.errors import ConfigError

SECRET_FIELDS = ("broker_password", "db_password", "web_secret_key", "web_token", "web_password", "server_token",
                 "webhook_secret")

# A number from the environment must be finite and at least 0 (where 0 has a meaning, it is
# documented: segments never, threads as many as the cores, no timeout); these must be more:
POSITIVE = ("poll_seconds", "lease_seconds", "reconcile_seconds", "notify_seconds", "webhook_timeout_seconds",
            "worker_heartbeat_seconds", "db_timeout_seconds", "web_session_seconds", "web_stale_upload_seconds")
AT_LEAST_ONE = ("delivery_limit", "db_pool_size", "webhook_max_attempts", "web_workers", "web_threads",
                "web_login_max_failures", "max_video_bytes", "web_max_upload_bytes")
PORTS = ("broker_port", "db_port")
METRICS_PORTS = ("worker_metrics_port", "producer_metrics_port")   # also 0 (any free port) or -1 (none)


@dataclass(frozen=True)
class Settings:
    # --- shared filesystem -------------------------------------------------
    data: Path = Path("data")
    models_dir: Path | None = None  # default: <data>/models
    node: str = field(default_factory=socket.gethostname)

    # --- pipeline ----------------------------------------------------------
    profile: str = "camera-trap"           # the analysis profile of a job that names none (profiles.py)
    profiles_file: Path | None = None      # the operator's profiles (default: <data>/profiles.toml)
    pipeline_cache_mb: int = 1024          # a worker keeps loaded pipelines while their models fit in this
    detector: str = "MDV6-yolov9-c"
    classifier: str = "none"
    pose: str = "superanimal_quadruped"
    device: str = "auto"
    fps: float = 5.0
    batch_size: int = 4
    backend: str = "auto"                  # auto | torch | onnxruntime | openvino (pipeline/backends.py)
    precision: str = "fp32"                # fp32 | bf16 (opt-in: OpenVINO on CPU nodes, PyTorch autocast on GPUs)
    #                                        | int8 (opt-in, CPU nodes: `wildswarm models quantize` exports)
    overlap: str = "auto"                  # decode ahead and draw behind in threads: auto | on | off
    pose_crops: str = "auto"               # who cuts pose crops: auto (device on a GPU) | device | deeplabcut
    threads: int = 0                       # inference threads (0: the cores this process may use)
    backend_cache: Path | None = None      # the backends' timings and exports made at load (default: <data>/cache)
    detector_image_size: int = 640
    detection_threshold: float = 0.2
    max_animals: int = 5
    pose_threshold: float = 0.1
    track_lost_seconds: float = 5.0        # an animal unseen this long comes back with a new id
    smooth: str = "none"                   # keypoints_filtered.*: none, median or savgol (pipeline/smooth.py)
    smooth_window: int = 5                 # frames (odd) the smoothing filter spans
    segment_seconds: float = 60.0          # a longer video is analysed in segments of this length (0: never)
    segment_overlap_seconds: float = 2.0   # each segment reads this much of the next, to stitch the tracks
    untrained: bool = False

    # --- broker ------------------------------------------------------------
    broker_host: str = "127.0.0.1"
    broker_port: int = 5672
    broker_vhost: str = "/"
    broker_user: str = "wildswarm"
    broker_password: str = field(default="", repr=False)  # secret
    broker_heartbeat: int = 60
    queue: str = "wildswarm.jobs"
    broker_declare: bool = True            # declare the queues (else only check them: a user without configure)
    delivery_limit: int = 3

    # --- job store (PostgreSQL) ---------------------------------------------
    db_host: str = "127.0.0.1"
    db_port: int = 5432
    db_name: str = "wildswarm"
    db_user: str = "wildswarm"
    db_password: str = field(default="", repr=False)  # secret
    db_schema: str = "public"              # several stacks may share one database, a schema each
    db_pool_size: int = 4                  # connections per process
    db_timeout_seconds: float = 10.0       # waiting for a free connection
    db_wait_seconds: float = 120.0         # how long a starting service waits for the store
    lease_seconds: float = 60.0            # a running job's lease; its worker renews it every quarter of it

    # --- retries and the reconciler ---------------------------------------
    retry_delay_seconds: float = 30.0      # a retriable failure waits this long, x4 each further attempt ...
    retry_delay_max_seconds: float = 600.0  # ... up to this
    reconcile_seconds: float = 15.0        # how often the producer's reconciler looks for stranded jobs
    republish_after_seconds: float = 300.0  # a queued job whose message seems gone this long is published again

    # --- notifications (webhooks; the producer sends them: notifier.py) ------------------------
    notify_seconds: float = 5.0            # how often the producer looks for notifications to send
    webhook_timeout_seconds: float = 10.0  # a receiver that does not answer this fast is tried again later
    webhook_retry_seconds: float = 30.0    # the first retry's delay, doubling each time (at most an hour)
    webhook_max_attempts: int = 10         # then it is given up, the last error kept on the job
    webhook_secret: str = field(default="", repr=False)  # secret: signs each body (X-Wildswarm-Signature)
    webhook_allow_internal: bool = False   # also POST to internal addresses: loopback, link-local, the producer's
    #                                        own networks (in the stack: every service of it, and its node)
    public_url: str = ""                   # the web app's address as users see it: links in notifications

    # --- producer ----------------------------------------------------------
    extensions: tuple[str, ...] = (".mp4",)
    max_video_bytes: int = 4 * 1024**3
    settle_seconds: float = 5.0
    poll_seconds: float = 2.0

    # --- worker ------------------------------------------------------------
    stop_grace_seconds: float = 30.0
    worker_heartbeat_seconds: float = 10.0  # how often a worker says it is alive (and lost after 3 missed)
    # Test/benchmark aid only: "module:Class" of a stand-in for the real
    # Pipeline (e.g. wildswarm.testing:SleepAnalyzer). Empty: the real Pipeline.
    analyzer: str = ""

    # --- a remote server (wildswarm submit|status|download --server) -----------
    server: str = ""                       # the web app's address, https://host:8443
    server_token: str = field(default="", repr=False)  # secret: its API token (the stack's web token)

    # --- metrics -----------------------------------------------------------
    worker_metrics_port: int = 9101
    producer_metrics_port: int = 9102

    # --- web ---------------------------------------------------------------
    web_secret_key: str = field(default="", repr=False)  # secret
    web_token: str = field(default="", repr=False)  # secret
    web_user: str = "wildswarm"
    web_password: str = field(default="", repr=False)  # secret
    web_auth: bool = True
    web_bind: str = "0.0.0.0:8000"         # gunicorn's --bind
    web_workers: int = 2                   # gunicorn worker processes (each holds one broker connection)
    web_threads: int = 4                   # threads per worker (gthread): concurrent uploads per process
    web_timeout: int = 120                 # gunicorn worker timeout, seconds
    web_max_upload_bytes: int = 4 * 1024**3  # one uploaded video at most (max_video_bytes applies too)
    web_log_lines: int = 200               # lines shown per node on the node-logs page
    web_cookie_secure: bool = False        # session cookie only over HTTPS (set behind a TLS proxy)
    web_stale_upload_seconds: float = 3600.0  # a part file of an upload untouched this long is removed
    web_session_seconds: float = 12 * 3600  # a login lasts this long (logging out ends it sooner)
    web_login_max_failures: int = 5        # failed logins from one address before it must wait ...
    web_login_lock_seconds: float = 60.0   # ... this long, doubling with each further failure ...
    web_login_window_seconds: float = 900.0  # ... up to this; failures older than this are forgotten
    web_trusted_proxies: int = 0           # proxies in front whose X-Forwarded-For is believed (the stack: 1)
    # The cluster page: node CPU and memory from Prometheus's HTTP API (empty: not shown), and the
    # charting library it draws with, served by the app itself (Debian's libjs-chart.js).
    prometheus_url: str = ""               # the stack: http://prometheus:9090/prometheus
    chartjs_file: Path = Path("/usr/share/javascript/chart.js/chart.min.js")

    @property
    def models(self) -> Path:
        return self.models_dir if self.models_dir is not None else self.data / "models"

    @property
    def cache(self) -> Path:
        return self.backend_cache if self.backend_cache is not None else self.data / "cache"

    @property
    def profiles_path(self) -> Path:
        return self.profiles_file if self.profiles_file is not None else self.data / "profiles.toml"

    def replace(self, **changes) -> "Settings":
        return dataclasses.replace(self, **changes)

    @property
    def broker_url_redacted(self) -> str:
        return f"amqp://{self.broker_user}:***@{self.broker_host}:{self.broker_port}/{self.broker_vhost}"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides) -> "Settings":
        """Build settings from ``WILDSWARM_*`` variables, then apply ``overrides``."""
        env = os.environ if env is None else env
        values: dict[str, object] = {}
        for f in fields(cls):
            key = "WILDSWARM_" + f.name.upper()
            raw = env.get(key)
            if f.name in SECRET_FIELDS and env.get(key + "_FILE"):
                path = Path(env[key + "_FILE"])
                try:
                    raw = path.read_text().strip()
                except OSError as exc:
                    raise ConfigError(f"{key}_FILE={path}: cannot read secret: {exc.strerror}") from exc
            if raw is None:
                continue
            values[f.name] = _parse(f.name, key, raw, f.type)
            _check_range(f.name, key, raw, values[f.name])
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


def _check_range(name: str, key: str, raw: str, value: object) -> None:
    """:class:`ConfigError` for a value a service would only stumble on later (a lease of NaN
    seconds in SQL, ``time.sleep(-1)``, gunicorn binding port 80000), named with its variable."""
    if name == "web_bind":
        port = re.fullmatch(r"(?!unix:).*:(\d+)", str(value))
        if port and not 1 <= int(port[1]) <= 65535:
            raise ConfigError(f"{key}={raw!r}: the port must be 1 to 65535")
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    if not math.isfinite(value):
        raise ConfigError(f"{key}={raw!r} must be a finite number")
    if name in PORTS and not 1 <= value <= 65535:
        raise ConfigError(f"{key}={raw!r}: a port is 1 to 65535")
    if name in METRICS_PORTS:
        if not -1 <= value <= 65535:
            raise ConfigError(f"{key}={raw!r}: a port is 1 to 65535 (0: any free port, -1: none)")
        return
    if name in POSITIVE and value <= 0:
        raise ConfigError(f"{key}={raw!r} must be more than 0")
    if name in AT_LEAST_ONE and value < 1:
        raise ConfigError(f"{key}={raw!r} must be at least 1")
    if value < 0:
        raise ConfigError(f"{key}={raw!r} must be at least 0")


def _parse(name: str, key: str, raw: str, annotation) -> object:
    kind = str(annotation)
    try:
        if "Path" in kind:
            if raw.strip():
                return Path(raw)
            # Path("") is the current folder: an empty optional path means its default instead
            # (an env file's `KEY=`, a compose `${KEY:-}`), and an empty required one is an error.
            if "None" in kind:
                return None
            raise ConfigError(f"{key} is empty: give a path")
        if "bool" in kind:
            low = raw.strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off", ""):
                return False
            raise ValueError(raw)
        if "tuple" in kind:
            return tuple(p.strip().lower() for p in raw.split(",") if p.strip())
        if "int" in kind:
            return int(raw)
        if "float" in kind:
            return float(raw)
    except ValueError:
        raise ConfigError(f"{key}={raw!r} is not a valid {kind}") from None
    return raw
