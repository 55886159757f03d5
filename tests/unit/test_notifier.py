"""Webhooks (issue 13): a JSON POST when a job ends, signed, retried with a doubling backoff, given up
after a bound, sent again after a retry, never sent twice; from the producer's own thread. A real job
store and a real HTTP receiver on 127.0.0.1."""
from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time

import pytest

from kit.fakes import FakeBroker
from kit.webhooks import Receiver, Streamer, slow_headers
from wildswarm.intake import Intake, Refused
from wildswarm.jobs.deployments import Deployment, Deployments
from wildswarm.notifier import Notifier, WebhookError, check_webhook
from wildswarm.publisher import Publisher


@pytest.fixture
def receiver():
    made = []

    def make(*codes, delay=0.0):
        made.append(Receiver(codes, delay))
        return made[-1]
    yield make
    for r in made:
        r.close()


@pytest.fixture
def settings(db_settings):
    """The receivers here listen on 127.0.0.1, an internal address: allowed for these tests."""
    return db_settings.replace(webhook_retry_seconds=0.2, webhook_max_attempts=3, webhook_timeout_seconds=1.0,
                               webhook_secret="s3cret", public_url="https://wildswarm.lab.example",
                               webhook_allow_internal=True)


def run_within(notifier, limit: float) -> float:
    """Seconds one pass of ``notifier`` took, run in a thread; ``limit`` (inf if it had not ended by then)."""
    started = time.monotonic()
    t = threading.Thread(target=notifier.run_once, daemon=True)
    t.start()
    t.join(timeout=limit)
    return float("inf") if t.is_alive() else time.monotonic() - started


def finish(store, job_id, name="fox.mp4", **submit):
    store.submit(job_id, name, 10, **submit)
    store.claim(job_id, "w/1", "w")
    store.finish(job_id, "w/1", output=name[:-4], outputs=[], frames=50, untrained=False, timings={},
                 findings={"animals": 2, "tracks": 3, "species": {"zebra": 3}})


def test_a_finished_job_posts_once_signed_with_what_it_found(settings, store, receiver):
    r = receiver()
    finish(store, "f000000000000001", webhook_url=r.url)
    store.submit("f000000000000002", "queued.mp4", 10, webhook_url=r.url)       # not ended: nothing yet
    store.submit("f000000000000003", "quiet.mp4", 10)                           # no webhook
    notifier = Notifier(settings, store.db)
    assert notifier.run_once() == 1 and notifier.run_once() == 0                 # never twice
    ((headers, body),) = r.got
    sent = json.loads(body)
    assert sent["event"] == "job.done" and headers["X-Wildswarm-Event"] == "job.done"
    assert sent["job"]["id"] == "f000000000000001" and sent["job"]["species"] == {"zebra": 3}
    assert sent["job"]["animals"] == 2 and sent["job"]["tracks"] == 3 and sent["job"]["frames"] == 50
    assert sent["links"]["page"] == "https://wildswarm.lab.example/jobs/f000000000000001"
    expected = "sha256=" + hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    assert headers["X-Wildswarm-Signature"] == expected
    job = store.get("f000000000000001")
    assert job.notify_state == "sent" and job.notified_at and job.notify_attempts == 1


def test_a_failing_receiver_is_retried_with_backoff_then_given_up(settings, store, receiver):
    r = receiver(500, 503)
    finish(store, "f000000000000004", webhook_url=r.url)
    notifier = Notifier(settings, store.db)
    assert notifier.run_once() == 0
    job = store.get("f000000000000004")
    assert job.notify_state == "waiting" and job.notify_attempts == 1 and "HTTP 500" in job.notify_error
    assert notifier.run_once() == 0 and len(r.got) == 1                 # not due yet: 0.2 s backoff
    time.sleep(0.25)
    assert notifier.run_once() == 0 and len(r.got) == 2                 # 503; next in 0.4 s
    time.sleep(0.25)
    assert notifier.run_once() == 0 and len(r.got) == 2                 # the backoff doubled
    time.sleep(0.2)
    assert notifier.run_once() == 1 and len(r.got) == 3
    assert store.get("f000000000000004").notify_state == "sent"
    # a receiver that is not there: given up after webhook_max_attempts, the error kept
    finish(store, "f000000000000005", webhook_url="http://127.0.0.1:9/nothing-listens")
    for _ in range(3):
        notifier.run_once()
        time.sleep(0.9)
    gone = store.get("f000000000000005")
    assert gone.notify_state == "gave_up" and gone.notify_attempts == 3 and "ConnectionError" in gone.notify_error


def test_failed_and_cancelled_jobs_notify_and_a_retry_notifies_again(settings, store, receiver):
    r = receiver()
    store.submit("f000000000000006", "owl.mp4", 10, webhook_url=r.url)
    store.claim("f000000000000006", "w/1", "w")
    store.fail("f000000000000006", "w/1", "VideoError: corrupt")
    store.submit("f000000000000007", "bat.mp4", 10, webhook_url=r.url)
    store.cancel("f000000000000007", "cancelled from a test")
    notifier = Notifier(settings, store.db)
    assert notifier.run_once() == 2
    events = sorted(json.loads(body)["event"] for _, body in r.got)
    assert events == ["job.cancelled", "job.failed"]
    store.reset_for_retry("f000000000000006", lambda j: j.input_name, stale_seconds=300)
    assert store.get("f000000000000006").notify_state == "waiting" and notifier.run_once() == 0   # queued again
    store.claim("f000000000000006", "w/2", "w")
    store.fail("f000000000000006", "w/2", "VideoError: still corrupt")
    assert notifier.run_once() == 1 and len(r.got) == 3


def test_a_slow_receiver_holds_only_the_notifier(settings, store, receiver):
    """webhook_timeout_seconds bounds a receiver that does not answer; the job is tried again later."""
    r = receiver(delay=3.0)
    finish(store, "f000000000000008", webhook_url=r.url)
    started = time.monotonic()
    assert Notifier(settings, store.db).run_once() == 0
    assert time.monotonic() - started < 2.5
    job = store.get("f000000000000008")
    assert job.notify_state == "waiting" and "no answer within 1 s" in job.notify_error


def test_a_receiver_that_trickles_or_floods_its_answer_holds_the_notifier_no_longer_than_the_timeout(settings, store):
    """Audit: the whole answer was read, each read bounded by the timeout but not the whole: a receiver that
    answered 200 and then sent its body a byte at a time held the notifier (every job's webhook) for as long as
    it liked, and one that answered gigabytes had them all read into the producer's memory."""
    slow, flood = Streamer(total=10**6, chunk=1, pause=0.2), Streamer(total=400 * 2**20, chunk=2**20)
    try:
        finish(store, "f00000000000000b", webhook_url=slow.url)
        notifier = Notifier(settings, store.db)
        assert run_within(notifier, 10) < 5, "the notifier still reading a trickled answer (timeout 1 s)"
        finish(store, "f00000000000000c", name="bat.mp4", webhook_url=flood.url)
        notifier.run_once()
        time.sleep(0.5)
        assert flood.sent < 64 * 2**20, f"{flood.sent} bytes of the receiver's answer read"
        assert {store.get(i).notify_state for i in ("f00000000000000b", "f00000000000000c")} == {"sent"}
    finally:
        notifier.stopping.set()
        slow.close()
        flood.close()


def test_a_deployments_webhook_serves_its_jobs_that_name_none(settings, store, receiver):
    r = receiver()
    deployments = Deployments(store.db)
    deployments.save(Deployment.parse({"id": "cam7"}))
    deployments.set_webhook("cam7", r.url)
    store.submit("f000000000000009", "a.mp4", 10, deployment_id="cam7")
    store.submit("f00000000000000a", "b.mp4", 10, deployment_id="cam7", webhook_url="http://127.0.0.1:9/own")
    assert store.get("f000000000000009").webhook_url == r.url
    assert store.get("f00000000000000a").webhook_url == "http://127.0.0.1:9/own"
    assert "webhook" not in json.dumps(deployments.get("cam7").to_dict())          # exports never see it


def test_webhooks_must_be_http_urls(settings, store):
    assert check_webhook(" https://x.example/h?t=1 ") == "https://x.example/h?t=1"
    for bad in ("ftp://x.example/", "file:///etc/passwd", "https://", "javascript:alert(1)", "http://a b/",
                "https://x.example/" + "a" * 2001):
        with pytest.raises(WebhookError):
            check_webhook(bad)
    intake = Intake(settings, store, Publisher(settings, "test", broker=FakeBroker()))
    with pytest.raises(Refused, match="http:// or https://"):
        intake.webhook("gopher://x.example/")
    assert intake.webhook("") is None


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::1]", "169.254.169.254", "0.0.0.0"])
def test_a_webhook_to_an_internal_address_is_refused_unsent_and_given_up_at_once(settings, store, receiver, host):
    """Audit: any logged-in user could make the producer POST to the stack's own services, the node itself or
    the cloud's metadata address, and read from the job's notify_error which ports answer. Internal addresses
    (loopback, link-local, unspecified, the producer's own networks) are refused unless allowed, judged on the
    address connected to (a name that resolves to one is refused too), and given up at once: a retry would
    meet the same setting."""
    r = receiver()
    url = r.url.replace("127.0.0.1", host) if host != "169.254.169.254" else "http://169.254.169.254/hook"
    finish(store, "f00000000000000d", webhook_url=url)
    notifier = Notifier(settings.replace(webhook_allow_internal=False), store.db)
    assert notifier.run_once() == 0
    job = store.get("f00000000000000d")
    assert job.notify_state == "gave_up" and job.notify_attempts == 1 and r.got == []
    assert "internal address" in job.notify_error and "WILDSWARM_WEBHOOK_ALLOW_INTERNAL" in job.notify_error


def test_the_producers_own_networks_are_internal_and_the_outside_is_not():
    from ipaddress import ip_address

    from wildswarm.notifier import internal_address, own_networks
    nets = own_networks()
    assert nets, "no directly connected network read from /proc/net/route"
    for net in nets:
        assert internal_address(net.network_address + 1), net
    assert internal_address(ip_address("10.0.1.7")) is (any(ip_address("10.0.1.7") in n for n in nets))
    assert not internal_address(ip_address("8.8.8.8")) and not internal_address(ip_address("2606:4700::1111"))
    assert internal_address(ip_address("fe80::1")) and internal_address(ip_address("::ffff:127.0.0.1"))


@pytest.mark.parametrize("allow_internal", [True, False])
def test_a_receiver_that_trickles_its_headers_is_cut_off_at_the_whole_requests_deadline(settings, store, monkeypatch,
                                                                                      allow_internal):
    """A receiver that sent its headers a byte at a time, each byte inside the timeout, held the notifier's one
    thread (every job's webhook) for as long as it liked: the timeout bounds each read, not the request. The
    whole request has a deadline now (three timeouts), after which its connection is cut."""
    slow = slow_headers(pause=0.2)
    notifier = None
    try:
        if not allow_internal:      # the checked connections of a stack's notifier: 127.0.0.1 let through here
            monkeypatch.setattr("wildswarm.notifier.own_networks", lambda: [])
            monkeypatch.setattr("wildswarm.notifier.internal_address", lambda ip: False)
        finish(store, "f00000000000000e", webhook_url=slow.url)
        notifier = Notifier(settings.replace(webhook_allow_internal=allow_internal), store.db)
        assert run_within(notifier, 15) < 8, "the notifier still reading trickled headers (timeout 1 s)"
        job = store.get("f00000000000000e")
        assert job.notify_state == "waiting" and "no whole answer within 3 s" in job.notify_error
    finally:
        if notifier is not None:
            notifier.stopping.set()
        slow.close()
