from pathlib import Path

import pytest

from wildswarm.config import Settings
from wildswarm.errors import ConfigError


def test_defaults_pick_cpu_friendly_models():
    s = Settings.from_env({})
    assert (s.detector, s.classifier, s.pose, s.fps) == ("MDV6-yolov9-c", "none", "superanimal_quadruped", 5.0)
    assert s.models == Path("data") / "models"


def test_environment_is_parsed_by_type():
    s = Settings.from_env({"WILDSWARM_DATA": "/srv/x", "WILDSWARM_FPS": "2.5", "WILDSWARM_UNTRAINED": "yes",
                           "WILDSWARM_BATCH_SIZE": "8", "WILDSWARM_EXTENSIONS": ".MP4, .mov"})
    assert s.data == Path("/srv/x") and s.models == Path("/srv/x/models")
    assert s.fps == 2.5 and s.untrained is True and s.batch_size == 8
    assert s.extensions == (".mp4", ".mov")


def test_overrides_win_and_none_is_ignored():
    s = Settings.from_env({"WILDSWARM_FPS": "2"}, fps=None, detector="MDV5a")
    assert s.fps == 2.0 and s.detector == "MDV5a"


def test_secret_from_file_wins(tmp_path):
    (tmp_path / "pw").write_text("s3cret\n")
    s = Settings.from_env({"WILDSWARM_BROKER_PASSWORD": "plain", "WILDSWARM_BROKER_PASSWORD_FILE": str(tmp_path / "pw")})
    assert s.broker_password == "s3cret"
    assert "s3cret" not in s.broker_url_redacted


def test_unreadable_secret_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read secret"):
        Settings.from_env({"WILDSWARM_WEB_TOKEN_FILE": str(tmp_path / "absent")})


@pytest.mark.parametrize("key,value", [("WILDSWARM_FPS", "fast"), ("WILDSWARM_UNTRAINED", "maybe"),
                                       ("WILDSWARM_BROKER_PORT", "5672.5")])
def test_malformed_values_are_config_errors(key, value):
    with pytest.raises(ConfigError, match=key):
        Settings.from_env({key: value})


@pytest.mark.parametrize("key,value,says", [
    ("WILDSWARM_LEASE_SECONDS", "nan", "finite"),           # every claim would fail in SQL, much later
    ("WILDSWARM_POLL_SECONDS", "-1", "more than 0"),        # time.sleep(-1) in the producer's loop
    ("WILDSWARM_LEASE_SECONDS", "0", "more than 0"),        # every running job stranded at once
    ("WILDSWARM_RECONCILE_SECONDS", "inf", "finite"),
    ("WILDSWARM_SEGMENT_SECONDS", "-60", "at least 0"),     # 0 is documented as never; -60 meant nothing
    ("WILDSWARM_DELIVERY_LIMIT", "0", "at least 1"),
    ("WILDSWARM_WEB_WORKERS", "0", "at least 1"),
    ("WILDSWARM_BROKER_PORT", "70000", "65535"),
    ("WILDSWARM_DB_PORT", "0", "1 to 65535"),
    ("WILDSWARM_WORKER_METRICS_PORT", "70000", "1 to 65535"),
    ("WILDSWARM_PRODUCER_METRICS_PORT", "-2", "1 to 65535"),
    ("WILDSWARM_WEB_BIND", "0.0.0.0:80000", "65535"),       # gunicorn died with a traceback
    ("WILDSWARM_WEB_TRUSTED_PROXIES", "-1", "at least 0"),
])
def test_values_out_of_their_range_are_config_errors_naming_the_variable(key, value, says):
    with pytest.raises(ConfigError, match=f"{key}=.*{says}"):
        Settings.from_env({key: value})


@pytest.mark.parametrize("key,value", [("WILDSWARM_SEGMENT_SECONDS", "0"), ("WILDSWARM_THREADS", "0"),
                                       ("WILDSWARM_BROKER_HEARTBEAT", "0"), ("WILDSWARM_WEB_BIND", "unix:/run/x.sock"),
                                       ("WILDSWARM_WEB_BIND", "[::1]:8000"), ("WILDSWARM_STOP_GRACE_SECONDS", "0"),
                                       ("WILDSWARM_WORKER_METRICS_PORT", "0"),      # any free port
                                       ("WILDSWARM_PRODUCER_METRICS_PORT", "-1")])  # none
def test_the_documented_zeros_and_other_binds_stay_allowed(key, value):
    Settings.from_env({key: value})


def test_secrets_stay_out_of_reprs():
    s = Settings(broker_password="pw1", web_token="tok2", web_password="pw3", web_secret_key="key4")
    text = repr(s)
    assert not any(secret in text for secret in ("pw1", "tok2", "pw3", "key4"))


@pytest.mark.parametrize("key, prop, default", [("WILDSWARM_MODELS_DIR", "models", "models"),
                                                 ("WILDSWARM_PROFILES_FILE", "profiles_path", "profiles.toml"),
                                                 ("WILDSWARM_BACKEND_CACHE", "cache", "cache")])
def test_an_empty_optional_path_means_its_default_not_the_current_folder(key, prop, default):
    """``WILDSWARM_MODELS_DIR=`` in an env file (or a compose ``${VAR:-}``) used to become Path(""),
    the current folder: models looked up, and caches written, wherever the process started."""
    s = Settings.from_env({key: " ", "WILDSWARM_DATA": "/srv/wildswarm"})
    assert getattr(s, prop) == Path("/srv/wildswarm") / default


@pytest.mark.parametrize("key", ["WILDSWARM_DATA", "WILDSWARM_CHARTJS_FILE"])
def test_an_empty_required_path_is_a_config_error(key):
    with pytest.raises(ConfigError, match=f"{key} is empty"):
        Settings.from_env({key: ""})


def test_the_stacks_settings_file_names_real_settings_with_their_defaults():
    """config/wildswarm.env lists the settings an operator may change, commented out at their
    defaults: each one must be a setting (a misspelt one is ignored silently at deploy), and its
    value the default it claims to be."""
    import re
    from dataclasses import fields
    text = (Path(__file__).resolve().parents[2] / "config" / "wildswarm.env").read_text()
    listed = dict(re.findall(r"^# (WILDSWARM_[A-Z0-9_]+)=(\S*)", text, re.M))
    names = {"WILDSWARM_" + f.name.upper() for f in fields(Settings)}
    assert len(listed) > 20 and not set(listed) - names, set(listed) - names
    defaults = Settings()
    parsed = Settings.from_env(listed)
    for key in listed:
        name = key[len("WILDSWARM_"):].lower()
        assert getattr(parsed, name) == getattr(defaults, name), (key, listed[key], getattr(defaults, name))
