"""The notifier: a JSON POST to a job's webhook when it finishes, fails or is cancelled.

A webhook is given with an upload (``webhook``), ``wildswarm submit --webhook``, or on a deployment
(its jobs that name none get it). The producer runs the notifier in a thread of its own: workers
never wait for a webhook, and a slow or dead receiver never delays the producer's reconciling.

Every ``notify_seconds`` it takes the ended jobs whose notification is due (``FOR UPDATE SKIP
LOCKED``: two producers never send one twice at once) and POSTs::

    {"event": "job.done" | "job.failed" | "job.cancelled", "job": {id, input_name, status, error,
     animals, tracks, species, profile, deployment_id, frames, created_at, finished_at, ...},
     "links": {"page": ..., "api": ...}}       (links when WILDSWARM_PUBLIC_URL is set)

with ``X-Wildswarm-Event`` and, when ``WILDSWARM_WEBHOOK_SECRET`` is set,
``X-Wildswarm-Signature: sha256=<HMAC-SHA256 of the body>``. A 2xx answer is delivered; anything
else (an error status, a refused connection, no answer within ``webhook_timeout_seconds``, or status
and headers not all in within three times it) is tried again after ``webhook_retry_seconds``, doubling each time (at most an hour), and given up after
``webhook_max_attempts``, with the last error kept on the job. A retried job notifies again.

A receiver at an internal address is refused (given up at once, the reason on the job) unless
``webhook_allow_internal``: loopback, link-local (a cloud's metadata service), unspecified, multicast or
reserved addresses, and the networks the producer is directly on (in the stack: its overlay networks,
where every service of the stack answers, and the bridge to its node). Without it any user who may
upload could make the producer POST to the stack's own consoles and read from the job which ports
answer. The address judged is the one connected to, after the name is resolved, so a name that
resolves to an internal address is refused as the address itself is.
"""
from __future__ import annotations

import contextlib
import hashlib
import hmac
import ipaddress
import json
import logging
import socket
import struct
import threading
import weakref
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from wildswarm import __version__, metrics
from wildswarm.config import Settings
from wildswarm.errors import JobStoreError
from wildswarm.jobs import Job

log = logging.getLogger(__name__)

BATCH = 20
DEADLINE_TIMEOUTS = 3     # a whole request (connect, send, status and headers) ends after this many timeouts
MAX_URL = 2000
MAX_DELAY = 3600.0


class WebhookError(ValueError):
    pass


class InternalReceiver(WebhookError):
    """A webhook whose receiver is at an internal address, with ``webhook_allow_internal`` off."""


Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def own_networks() -> list[Network]:
    """The networks this process is directly on: its routing table's routes without a gateway (Linux)."""
    nets: list[Network] = []
    try:
        with open("/proc/net/route") as f:
            rows = [line.split() for line in f.readlines()[1:]]
        for row in rows:                     # Iface Destination Gateway Flags ... Mask (little-endian hex)
            dest, flags, mask = int(row[1], 16), int(row[3], 16), int(row[7], 16)
            if mask and not flags & 0x2:     # RTF_GATEWAY: reached through a router, not on it
                nets.append(ipaddress.ip_network((socket.inet_ntoa(struct.pack("<I", dest)),
                                                  socket.inet_ntoa(struct.pack("<I", mask))), strict=False))
    except (OSError, ValueError, IndexError):
        pass
    try:
        with open("/proc/net/ipv6_route") as f:
            rows = [line.split() for line in f]
        for row in rows:                     # dest prefixlen src srclen next_hop metric ... flags iface
            if int(row[1], 16) and int(row[4], 16) == 0:
                nets.append(ipaddress.ip_network((ipaddress.IPv6Address(bytes.fromhex(row[0])), int(row[1], 16)),
                                                 strict=False))
    except (OSError, ValueError, IndexError):
        pass
    return nets


def internal_address(ip: Address) -> bool:
    """Whether a webhook to ``ip`` would reach this node, its stack or its cloud rather than the outside."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback or ip.is_link_local or ip.is_unspecified or ip.is_multicast or ip.is_reserved:
        return True
    return any(ip in net for net in own_networks() if net.version == ip.version)


def receiver_address(host: str, port: int) -> str:
    """The address to connect to for ``host``; :class:`InternalReceiver` if any address it has is internal."""
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        return host                           # the connection says it cannot resolve the name
    addresses = [ipaddress.ip_address(info[4][0].split("%")[0]) for info in found]
    internal = [a for a in addresses if internal_address(a)]
    if internal:
        raise InternalReceiver(f"refused: {host} is {internal[0]}, an internal address (this node, its stack's "
                               "networks or link-local); set WILDSWARM_WEBHOOK_ALLOW_INTERNAL=true to allow it")
    return str(addresses[0])


class _Checked:
    """A connection that connects only to the receiver's checked address (the name kept for Host and TLS)."""

    def _new_conn(self):
        name = self._dns_host
        self._dns_host = receiver_address(name, self.port)
        try:
            return super()._new_conn()
        finally:
            self._dns_host = name


class _Cuttable:
    """A connection whose socket its adapter can cut: a request past its whole deadline."""
    opened: weakref.WeakSet

    def _new_conn(self):
        sock = super()._new_conn()
        self.opened.add(sock)
        return sock

    def connect(self):
        super().connect()
        self.opened.add(self.sock)              # over TLS, the wrapped socket the answer is read from


class WebhookAdapter(HTTPAdapter):
    """requests' adapter for webhooks: connections :meth:`cut` can end mid-read (a timeout bounds each read,
    not the request: a receiver sending its headers a byte at a time would hold the notifier for ever), and,
    with ``check``, that refuse internal receivers (:func:`receiver_address`)."""

    def __init__(self, check: bool):
        self.opened: weakref.WeakSet = weakref.WeakSet()
        mixins = (_Cuttable, _Checked) if check else (_Cuttable,)
        attrs = {"opened": self.opened}
        self._pools = {
            "http": type("WebhookHTTPPool", (HTTPConnectionPool,),
                         {"ConnectionCls": type("WebhookHTTPConnection", (*mixins, HTTPConnection), attrs)}),
            "https": type("WebhookHTTPSPool", (HTTPSConnectionPool,),
                          {"ConnectionCls": type("WebhookHTTPSConnection", (*mixins, HTTPSConnection), attrs)})}
        super().__init__()

    def init_poolmanager(self, *args, **kwargs):
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = dict(self._pools)

    def cut(self) -> None:
        """Shut every socket it opened that is still open: a read blocked on one returns at once."""
        for sock in list(self.opened):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


def check_webhook(url: str) -> str:
    """``url`` if it is an http(s) URL with a host; :class:`WebhookError` saying what is wrong."""
    url = url.strip()
    if len(url) > MAX_URL or any(ord(c) < 33 for c in url):
        raise WebhookError(f"a webhook is a URL of at most {MAX_URL} characters, without spaces")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise WebhookError(f"a webhook must be an http:// or https:// URL with a host, not {url[:100]!r}")
    return url


def payload(job: Job, public_url: str = "") -> dict:
    body = {"event": f"job.{job.status.value}", "job": {
        "id": job.id, "input_name": job.input_name, "status": job.status.value, "error": job.error,
        "animals": job.animals, "tracks": job.tracks, "species": job.species, "profile": job.profile,
        "deployment_id": job.deployment_id, "frames": job.frames_done, "attempts": job.attempts,
        "node": job.node, "output": job.output, "untrained": job.untrained,
        "created_at": job.created_at.isoformat(timespec="seconds") if job.created_at else None,
        "finished_at": job.finished_at.isoformat(timespec="seconds") if job.finished_at else None}}
    if public_url:
        base = public_url.rstrip("/")
        body["links"] = {"page": f"{base}/jobs/{job.id}", "api": f"{base}/api/jobs/{job.id}"}
    return body


class Notifications:
    """The notification columns of the jobs table (only these: a job's state is the store's)."""

    # jobs_notify_idx holds exactly the waiting jobs of this predicate (0017_notify_ended.sql): keep them the same
    ENDED = "status IN ('done', 'failed', 'cancelled') AND parent_id IS NULL"

    def __init__(self, db):
        self.db = db

    def due(self, hold_seconds: float, limit: int = BATCH) -> list[Job]:
        """Ended jobs whose notification is due, each held for ``hold_seconds`` (another notifier skips it)."""
        with self.db.connection("taking notifications") as conn:
            rows = conn.execute(
                "UPDATE jobs SET notify_at = now() + make_interval(secs => %(hold)s) WHERE id IN ("
                f"SELECT id FROM jobs WHERE notify_state = 'waiting' AND {self.ENDED} "
                "AND (notify_at IS NULL OR notify_at <= now()) ORDER BY notify_at NULLS FIRST, finished_at "
                "LIMIT %(limit)s FOR UPDATE SKIP LOCKED) RETURNING *",
                {"hold": hold_seconds, "limit": limit}).fetchall()
        return [Job.from_row(r) for r in rows]

    def sent(self, job_id: str) -> None:
        with self.db.connection("recording a notification") as conn:
            conn.execute("UPDATE jobs SET notify_state = 'sent', notified_at = now(), notify_at = NULL, "
                         "notify_attempts = notify_attempts + 1, notify_error = NULL WHERE id = %s", (job_id,))

    def missed(self, job_id: str, error: str, retry_seconds: float, max_attempts: int) -> tuple[int, bool]:
        """One more failed attempt: (attempts so far, whether it was given up)."""
        with self.db.connection("recording a failed notification") as conn:
            row = conn.execute(
                "UPDATE jobs SET notify_attempts = notify_attempts + 1, notify_error = %(error)s, "
                "notify_state = CASE WHEN notify_attempts + 1 >= %(max)s THEN 'gave_up' ELSE 'waiting' END, "
                "notify_at = now() + make_interval(secs => least(%(base)s * power(2, notify_attempts), %(cap)s)) "
                "WHERE id = %(id)s RETURNING notify_attempts, notify_state",
                {"id": job_id, "error": error[:1000], "max": max_attempts, "base": retry_seconds,
                 "cap": MAX_DELAY}).fetchone()
        return (row["notify_attempts"], row["notify_state"] == "gave_up") if row else (0, True)


class Notifier:
    def __init__(self, settings: Settings, db, note=None):
        self.settings = settings
        self.table = Notifications(db)
        self.session = requests.Session()
        self.session.headers["User-Agent"] = f"wildswarm/{__version__} (webhook)"
        self.adapter = WebhookAdapter(check=not settings.webhook_allow_internal)
        for scheme in ("http://", "https://"):
            self.session.mount(scheme, self.adapter)
        self.note = note or log.info
        self.stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def send(self, job: Job) -> str | None:
        """POST ``job``'s notification: None when delivered, else why not."""
        s = self.settings
        body = json.dumps(payload(job, s.public_url), separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json", "X-Wildswarm-Event": f"job.{job.status.value}",
                   "X-Wildswarm-Delivery": f"{job.id}-{job.notify_attempts + 1}"}
        if s.webhook_secret:
            headers["X-Wildswarm-Signature"] = "sha256=" + hmac.new(s.webhook_secret.encode(), body,
                                                                    hashlib.sha256).hexdigest()
        deadline, cut = s.webhook_timeout_seconds * DEADLINE_TIMEOUTS, threading.Event()
        timer = threading.Timer(deadline, lambda: (cut.set(), self.adapter.cut()))
        timer.daemon = True
        timer.start()
        try:
            # stream: the status line and headers decide; the body is never read (a receiver that trickles
            # it would hold every notification, one that floods it would fill the producer's memory)
            r = self.session.post(job.webhook_url, data=body, headers=headers, timeout=s.webhook_timeout_seconds,
                                  allow_redirects=False, stream=True)
            r.close()
        except InternalReceiver:
            raise
        except requests.RequestException as exc:
            if cut.is_set():
                return f"no whole answer within {deadline:g} s"
            if isinstance(exc, requests.Timeout):
                return f"no answer within {s.webhook_timeout_seconds:g} s"
            return f"{type(exc).__name__}: {str(exc)[:300]}"
        finally:
            timer.cancel()
        if cut.is_set():
            return f"no whole answer within {deadline:g} s"
        return None if 200 <= r.status_code < 300 else f"answered HTTP {r.status_code}"

    def run_once(self) -> int:
        """Send what is due; how many were delivered."""
        s, delivered = self.settings, 0
        for job in self.table.due(hold_seconds=s.webhook_timeout_seconds * DEADLINE_TIMEOUTS + 30):
            if self.stopping.is_set():
                break
            final = False
            try:
                error = self.send(job)
            except InternalReceiver as exc:          # the same setting would refuse every retry: given up now
                error, final = str(exc), True
            if error is None:
                self.table.sent(job.id)
                metrics.NOTIFICATIONS.labels("sent").inc()
                delivered += 1
                self.note(f"job {job.id} {job.input_name}: webhook notified (job.{job.status.value})")
                continue
            attempts, gave_up = self.table.missed(job.id, error, s.webhook_retry_seconds,
                                                  1 if final else s.webhook_max_attempts)
            metrics.NOTIFICATIONS.labels("gave_up" if gave_up else "failed").inc()
            self.note(f"job {job.id} {job.input_name}: webhook not notified ({error}); "
                      + (f"given up after {attempts} attempts" if gave_up else f"tried again later (attempt {attempts})"))
        return delivered

    def _run(self) -> None:
        while not self.stopping.wait(self.settings.notify_seconds):
            try:
                self.run_once()
            except JobStoreError as exc:
                log.warning("notifications skipped: %s", exc)
            except Exception:             # never let a bug end the thread: the next pass tries again
                log.exception("notifications: unexpected error")

    def start(self) -> "Notifier":
        self._thread = threading.Thread(target=self._run, daemon=True, name="notifier")
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=self.settings.webhook_timeout_seconds + 5)
