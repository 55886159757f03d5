"""Fixtures for the web app tests: a Flask test client on a temporary data root, no broker needed.

Publishing goes to :class:`webkit.FakeBroker` (in memory); tests with a real
RabbitMQ, gunicorn and Chromium live in tests/browser/.
"""
from __future__ import annotations

import pytest

from webkit import PASSWORD, SECRET, TOKEN, FakeBroker, OpenAPI, csrf_of, root_conftest
from wildswarm.config import Settings
from wildswarm.layout import Layout
from wildswarm.web import create_app
from wildswarm.web.publisher import Publisher


@pytest.fixture(scope="session")
def video_bytes(tmp_path_factory) -> bytes:
    return root_conftest().write_video(tmp_path_factory.mktemp("v") / "clip.mp4").read_bytes()


@pytest.fixture
def settings(tmp_path) -> Settings:
    s = Settings(data=tmp_path / "data", node="web-test", web_auth=True, web_password=PASSWORD, web_token=TOKEN,
                 web_secret_key=SECRET, web_republish_seconds=0, web_max_upload_bytes=1 << 20)
    Layout(s.data).ensure()
    return s


@pytest.fixture
def broker() -> FakeBroker:
    return FakeBroker()


@pytest.fixture
def app(settings, broker):
    app = create_app(settings, publisher=Publisher(settings, broker=broker))
    app.testing = True
    return app


@pytest.fixture
def anon(app):
    return app.test_client()


@pytest.fixture
def client(app):
    """A browser-like client, logged in; ``client.csrf`` is its CSRF token."""
    c = app.test_client()
    token = csrf_of(c)
    r = c.post("/login", data={"user": "wildswarm", "password": PASSWORD, "csrf_token": token, "next": "/"})
    assert r.status_code == 302, r.get_data(as_text=True)
    c.csrf = csrf_of(c)
    return c


@pytest.fixture
def bearer() -> dict:
    return {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="session")
def openapi() -> OpenAPI:
    return OpenAPI()
