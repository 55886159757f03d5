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


def test_secrets_stay_out_of_reprs():
    s = Settings(broker_password="pw1", web_token="tok2", web_password="pw3", web_secret_key="key4")
    text = repr(s)
    assert not any(secret in text for secret in ("pw1", "tok2", "pw3", "key4"))
