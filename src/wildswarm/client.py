"""A wildswarm server's JSON API, from anywhere: what ``wildswarm submit|status|download --server`` use.

A user who has only the web address and a token (``WILDSWARM_WEB_TOKEN`` of the stack) needs neither
the shared filesystem nor the broker. A video is hashed first: its job id comes from its content,
so one the server already has is not uploaded again (``GET /api/jobs/<id>`` says so). Uploads are
streamed (``requests-toolbelt``'s multipart encoder) with the form fields before the file, as the
server reads them.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator
from urllib.parse import quote, urljoin

import requests

from wildswarm.errors import WildswarmError

CHUNK = 1 << 20
#: How long an upload's answer is waited for once its last byte is sent: the web app hashes and checks the
#: whole video first (its proxy gives it WEB_TIMEOUT, 120 s by default); a server silent for longer has hung.
ANSWER_SECONDS = 600.0


class ServerError(WildswarmError):
    """The server could not be reached, or answered with an error (``status``, ``reason``)."""

    def __init__(self, message: str, status: int | None = None, reason: str | None = None):
        super().__init__(message)
        self.status, self.reason = status, reason


@dataclass(frozen=True)
class Upload:
    """What the server made of one video: ``result`` queued | pending | duplicate | retried | known."""

    job: dict
    result: str
    message: str


class Client:
    def __init__(self, server: str, token: str, *, timeout: float = 30.0, verify: bool | str = True,
                 answer_timeout: float = ANSWER_SECONDS):
        """``timeout``: for connecting, for a send to make headway, and for every answer but an upload's;
        ``answer_timeout``: for the answer to an upload, which the web app gives once it has hashed and
        checked the whole video."""
        if not server.startswith(("http://", "https://")):
            raise ServerError(f"--server {server!r}: give the web app's address, http(s)://host[:port]")
        # Stripped as a token file is (an env file's CRLF leaves TOKEN\r); a line break left inside would
        # have requests refuse the header in a message that quotes it, the secret printed with it.
        token = (token or "").strip()
        if not token:
            raise ServerError("no API token: give --token, --token-file or WILDSWARM_SERVER_TOKEN(_FILE) "
                              "(the stack's web token)")
        if "\r" in token or "\n" in token:
            raise ServerError("the API token has a line break in it: give it on one line")
        self.base = server.rstrip("/")
        self.timeout = timeout
        self.answer_timeout = answer_timeout
        self.http = requests.Session()
        self.http.headers.update({"Authorization": f"Bearer {token}", "Accept": "application/json"})
        self.http.verify = verify

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- requests ----------------------------------------------------------------------------------
    def _call(self, method: str, path: str, **kwargs) -> requests.Response:
        timeout = kwargs.pop("timeout", self.timeout)
        try:
            r = self.http.request(method, self.base + path, timeout=timeout, **kwargs)
        except requests.ReadTimeout:
            wait = timeout[1] if isinstance(timeout, tuple) else timeout
            raise ServerError(f"{self.base}{path.split('?')[0]}: no answer within {wait:g} s (the server or its proxy "
                              "has hung, or is overloaded); what was asked may have been done all the same") from None
        except requests.ConnectionError as exc:
            if not _timed_out(exc):
                raise ServerError(f"{self.base} cannot be reached: {exc}") from None
            raise ServerError(f"{self.base}{path.split('?')[0]}: the server stopped taking what was sent for "
                              f"{self.timeout:g} s (it, or its proxy, has hung); nothing was done") from None
        except requests.RequestException as exc:
            raise ServerError(f"{self.base} cannot be reached: {exc}") from None
        if r.is_redirect:       # not followed (an upload): where the web app is now is for the user to give
            raise ServerError(f"{self.base}{path.split('?')[0]}: {r.status_code} redirected to "
                              f"{urljoin(r.url, r.headers['Location']).split('?')[0]}: give --server the address "
                              "the web app answers at", r.status_code)
        if r.status_code >= 400:
            try:
                body = r.json()
            except ValueError:
                body = {}
            body = body if isinstance(body, dict) else {}     # not the web app's error: its status says enough
            raise ServerError(f"{self.base}{path.split('?')[0]}: {r.status_code} "
                              f"{body.get('error') or r.reason}", r.status_code, body.get("reason"))
        return r

    def _object(self, method: str, path: str, **kwargs) -> dict:
        """The JSON object the API answers; :class:`ServerError` when something else answered (the
        address of another console, a proxy's page): its status and content type, and what to check."""
        # Streamed, so an answer whose content type is not JSON is not read at all: a mistyped address may be
        # a camera's MJPEG or another endless stream, which reading to its end would only grow until killed.
        r = self._call(method, path, stream=True, **kwargs)
        kind = (r.headers.get("Content-Type") or "no content type").split(";")[0].strip().lower()
        try:
            body = r.json() if kind == "application/json" or kind.endswith("+json") else None
        except ValueError:
            body = None
        except requests.RequestException as exc:      # cut off while read, as _call said when it read it
            raise ServerError(f"{self.base} cannot be reached: {exc}") from None
        finally:
            r.close()
        if not isinstance(body, dict):
            raise ServerError(f"{self.base}{path.split('?')[0]}: answered {r.status_code} {kind}, not the wildswarm "
                              "API: is the server's address the wildswarm web app's?", r.status_code)
        return body

    def cancel(self, job_id: str) -> dict:
        """Cancel job ``job_id`` (:class:`ServerError` 409 if it has ended, 404 if there is none): the job."""
        return self._object("POST", f"/api/jobs/{quote(job_id)}/cancel")["job"]

    def job(self, job_id: str) -> dict | None:
        """The job ``job_id`` (with its files), or None if the server has no such job."""
        try:
            return self._object("GET", f"/api/jobs/{quote(job_id)}")
        except ServerError as exc:
            if exc.status == 404:
                return None
            raise

    def jobs(self, **filters) -> dict:
        """A listing (``GET /api/jobs``) with the given filters (None values left out)."""
        return self._object("GET", "/api/jobs", params={k: v for k, v in filters.items() if v is not None})

    def submit(self, video: Path, *, fields: dict | None = None,
               progress: Callable[[int], None] | None = None) -> Upload:
        """Upload ``video``; ``fields`` (profile, deployment, recorded_at) go before it; ``progress``
        gets the bytes sent so far."""
        from requests_toolbelt.multipart.encoder import MultipartEncoder, MultipartEncoderMonitor
        with open(video, "rb") as fh:
            parts = {k: str(v) for k, v in (fields or {}).items() if v}
            # A name on disk that is not UTF-8 (caf\xe9.mp4 from a Latin-1 system) is lone surrogates here, which
            # no multipart header can carry: U+FFFD instead, which the server's safe_name drops like a local submit.
            name = Path(video).name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
            parts["file"] = (name, fh, "video/mp4")
            encoder = MultipartEncoder(fields=parts)
            body = MultipartEncoderMonitor(encoder, (lambda m: progress(m.bytes_read)) if progress else None)
            # Not redirected: requests would follow a 301/302 as a GET (another answer read as the upload's),
            # and a 307/308 with the streamed body already read (nothing sent, an answer waited for forever).
            # The upload itself may take long, but each send must make headway within ``timeout`` s, and the answer
            # come within ``answer_timeout`` s of the last byte: past that, a hung server, not one still working.
            data = self._object("POST", "/api/jobs", data=body, headers={"Content-Type": body.content_type},
                                timeout=(self.timeout, self.answer_timeout), allow_redirects=False)
        return Upload(data["job"], data["result"], data["message"])

    def download(self, url_path: str, dest: Path, progress: Callable[[int, int], None] | None = None,
                 size: int | None = None) -> Path:
        """Stream ``url_path`` into ``dest`` through a hidden part file renamed at the end: nothing half-written is
        ever at ``dest``. ``size``, the file's size in the job's listing, is checked at the end: a body that just
        ends (no Content-Length or chunks to fall short of, as over HTTP/1.0) is no whole file.

        A file served with byte ranges and a strong ETag (a job's result files) that breaks off keeps what came,
        beside ``dest``; the next call asks for the rest only, and only if the file is still the one it began
        (``If-Range``: one changed since comes whole). A zip of results is made as it is sent: it starts over."""
        part, mark = dest.with_name(f".{dest.name}.part"), dest.with_name(f".{dest.name}.part.json")
        have, etag = _begun(part, mark, url_path)
        where = f"{self.base}{url_path.split('?')[0]}"
        try:
            r = self._call("GET", url_path, stream=True,
                           headers={"Range": f"bytes={have}-", "If-Range": etag} if have else {})
        except ServerError as exc:
            if have and exc.status == 416:          # what was kept is no start of the file as it is now
                _forget(part, mark)
                return self.download(url_path, dest, progress, size)
            raise
        resumed = bool(have) and r.status_code == 206 and _range_start(r.headers.get("Content-Range")) == have
        if r.status_code == 206 and not resumed:
            r.close()
            _forget(part, mark)
            raise ServerError(f"{where}: answered with a part of the file ({r.headers.get('Content-Range')}) other "
                              "than the one asked for; nothing was saved")
        done = have if resumed else 0
        length = r.headers.get("Content-Length") or ""
        total = done + int(length) if length.isdigit() else 0          # only the progress bar's: unknown is fine
        etag = r.headers.get("ETag") or ""
        resumable = (bool(etag) and not etag.startswith("W/") and r.headers.get("Accept-Ranges") == "bytes"
                     and dest.suffix.lower() != ".zip")
        kept = False            # it broke off, and what came stays for the next run
        try:
            if resumable:
                mark.write_text(json.dumps({"url": url_path, "etag": etag}))
            with open(part, "ab" if resumed else "wb") as out:
                try:
                    for block in r.iter_content(CHUNK):
                        out.write(block)
                        done += len(block)
                        if progress:
                            progress(done, total)
                except requests.RequestException as exc:     # cut off: short of its length, its last chunk, a timeout
                    kept = resumable and done > 0
                    raise ServerError(f"{where}: the download broke off after {done} bytes ({exc}); " + (
                        "they are kept: run the same command again to go on from there" if kept
                        else "nothing was saved")) from None
            if size is not None and done != size:
                raise ServerError(f"{where}: {done} bytes of {size}: the download did not end where the file does; "
                                  "nothing was saved")
            if dest.suffix.lower() == ".zip" and not whole_zip(part):
                raise ServerError(f"{where}: the zip was cut off after {done} bytes (it lacks the table of contents "
                                  "a zip ends with); nothing was saved")
            part.replace(dest)
            mark.unlink(missing_ok=True)
        except BaseException as exc:
            if not (kept or (isinstance(exc, KeyboardInterrupt) and resumable and done)):
                _forget(part, mark)
            raise
        finally:
            r.close()
        return dest

    def follow(self, job_ids: list[str], pause: float = 1.0) -> Iterator[list[dict]]:
        """The jobs ``job_ids`` again and again, every ``pause`` s, until all are finished (the last
        answer included)."""
        import time
        while True:
            jobs = [self._object("GET", f"/api/jobs/{quote(i)}") for i in job_ids]
            yield jobs
            if all(j["status"] in ("done", "failed", "cancelled") for j in jobs):
                return
            time.sleep(pause)


def _timed_out(exc: BaseException) -> bool:
    """Whether a connection error of requests' is, under its wrappers, a socket's timeout (a send that made no
    headway), not a refusal or a reset."""
    seen, todo = set(), [exc]
    while todo:
        e = todo.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, TimeoutError):
            return True
        todo.extend(a for a in getattr(e, "args", ()) if isinstance(a, BaseException))
        todo.extend(c for c in (e.__cause__, e.__context__) if c is not None)
    return False


def _begun(part: Path, mark: Path, url_path: str) -> tuple[int, str | None]:
    """(bytes, ETag) of a download of ``url_path`` that broke off into ``part``; (0, None) if there is none."""
    try:
        begun = json.loads(mark.read_text())
        have = part.stat().st_size
    except (OSError, ValueError):
        return 0, None
    if not isinstance(begun, dict) or begun.get("url") != url_path or not isinstance(begun.get("etag"), str):
        return 0, None
    return have, begun["etag"]


def _forget(part: Path, mark: Path) -> None:
    part.unlink(missing_ok=True)
    mark.unlink(missing_ok=True)


def _range_start(content_range: str | None) -> int | None:
    """Where ``Content-Range: bytes <start>-<end>/<size>`` starts."""
    try:
        unit, spec = (content_range or "").split(" ", 1)
        return int(spec.split("-", 1)[0]) if unit == "bytes" else None
    except ValueError:
        return None


def whole_zip(path: Path) -> bool:
    """Whether ``path`` is a zip that ends in its table of contents (a job's zip is made as it is sent, so
    no size says where it should end: one cut off over HTTP/1.0, or by a proxy, just stops)."""
    import zipfile
    try:
        with zipfile.ZipFile(path) as z:
            z.infolist()
        return True
    except (zipfile.BadZipFile, EOFError):
        return False
