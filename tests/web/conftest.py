"""Fixtures for the web app tests: a Flask test client on a real job store and a temporary data root.

Publishing goes to :class:`kit.fakes.FakeBroker` (in memory); tests with a real
RabbitMQ, gunicorn and Chromium live in tests/browser/.
"""
from __future__ import annotations

import pytest

from kit.fakes import FakeBroker
from kit.videos import write_video
from webkit import PASSWORD, SECRET, TOKEN, OpenAPI, csrf_of
from wildswarm.publisher import Publisher
from wildswarm.layout import Layout
from wildswarm.web import create_app


@pytest.fixture(scope="session")
def video_bytes(tmp_path_factory) -> bytes:
    return write_video(tmp_path_factory.mktemp("v") / "clip.mp4").read_bytes()


@pytest.fixture
def settings(db_settings):
    s = db_settings.replace(node="web-test", web_auth=True, web_password=PASSWORD, web_token=TOKEN,
                            web_secret_key=SECRET, web_max_upload_bytes=1 << 20)
    Layout(s.data).ensure()
    return s


@pytest.fixture
def broker() -> FakeBroker:
    return FakeBroker()


@pytest.fixture
def make_app(settings, store):
    """``make_app(broker=None, **setting_changes)``: an app on the test's job store."""
    def make(broker: FakeBroker | None = None, **changes):
        s = settings.replace(**changes) if changes else settings
        app = create_app(s, store=store, publisher=Publisher(s, "web", broker=broker or FakeBroker()))
        app.testing = True
        return app
    return make


@pytest.fixture
def app(make_app, broker):
    return make_app(broker)


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
