"""``wildswarm submit|status|download --server URL``: the same commands through the web app's API.

For a user with the web address and a token but neither the shared filesystem nor the broker.
The token comes from ``--token``, ``--token-file`` or ``WILDSWARM_SERVER_TOKEN`` (``_FILE``).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from wildswarm.client import Client, ServerError
from wildswarm.config import Settings
from wildswarm.errors import WildswarmError
from wildswarm.layout import safe_name


def server_options(fn):
    for decorator in reversed((
        click.option("--server", default=None, metavar="URL",
                     help="Do it through this wildswarm web app (https://host:8443; WILDSWARM_SERVER) instead "
                          "of the shared filesystem and the job store."),
        click.option("--token", default=None, help="The server's API token (WILDSWARM_SERVER_TOKEN); other users "
                                                   "see it in ps: prefer --token-file."),
        click.option("--token-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
                     help="A file holding the token (WILDSWARM_SERVER_TOKEN_FILE)."),
        click.option("--ca-bundle", type=click.Path(dir_okay=False, path_type=Path), default=None,
                     help="CA certificate(s) the server's TLS certificate is checked against (a self-signed stack's)."),
    )):
        fn = decorator(fn)
    return fn


def remote(settings: Settings, server: str | None) -> str | None:
    """The server to talk to, if any (the option, else WILDSWARM_SERVER)."""
    return server or settings.server or None


def client(settings: Settings, server: str, token: str | None, token_file: Path | None,
           ca_bundle: Path | None) -> Client:
    if token_file is not None:
        try:
            token = token_file.read_text().strip()
        except OSError as exc:
            raise ServerError(f"--token-file {token_file}: {exc.strerror}") from None
    return Client(server, token or settings.server_token, verify=str(ca_bundle) if ca_bundle else True)


def submit(c: Client, videos: tuple[Path, ...], fields: dict, wait: bool) -> int:
    """Upload each video unless the server has it (hashed first); the exit status."""
    from tqdm import tqdm

    from wildswarm.jobs import job_id_for
    jobs, refused = [], 0
    for video in videos:
        if not video.is_file():
            click.secho(f"refused: {video}: no such file", fg="red", err=True)
            refused += 1
            continue
        known = c.job(job_id_for(video))
        if known is not None and known["status"] != "failed":    # a failed one may need this copy: send it
            click.echo(f"{known['id']}  {known['input_name']}  already on the server ({known['status']}); "
                       "not uploaded again")
            jobs.append(known["id"])
            continue
        size = video.stat().st_size
        with tqdm(total=size, desc=video.name[:30], unit="B", unit_scale=True, file=sys.stderr, leave=False) as bar:
            def sent(n: int) -> None:
                bar.update(n - bar.n)
            try:
                up = c.submit(video, fields=fields, progress=sent)
            except ServerError as exc:
                if exc.status is None or exc.status >= 500 and exc.status != 507:
                    raise
                bar.close()
                click.secho(f"refused: {video.name}: {exc}", fg="red", err=True)
                refused += 1
                continue
        state = {"queued": "queued", "retried": "queued again", "pending": "saved; queued when the broker answers"
                 }.get(up.result, f"already known ({up.job['status']})")
        click.echo(f"{up.job['id']}  {up.job['input_name']}  {state}")
        if up.job["id"] not in jobs:
            jobs.append(up.job["id"])
    failed = follow(c, jobs) if wait and jobs else 0
    return 2 if refused else 1 if failed else 0


def follow(c: Client, job_ids: list[str]) -> int:
    """A progress bar per job until every one is finished; how many failed."""
    from tqdm import tqdm
    bars: dict[str, tqdm] = {}
    closed: set[str] = set()
    last: list[dict] = []
    for last in c.follow(job_ids):
        for n, j in enumerate(last):
            if j["id"] in closed:
                continue
            if j["id"] not in bars:
                bars[j["id"]] = tqdm(total=1, desc=f"{j['id'][:8]} {j['input_name'][:24]}", position=n,
                                     unit="frame", file=sys.stderr)
            bar = bars[j["id"]]
            bar.total = max(j["frames_total"], 1)
            bar.n = bar.total if j["status"] == "done" else min(j["frames_done"], bar.total)
            bar.set_postfix_str(f"{j['status']} {j.get('node') or ''}".strip(), refresh=False)
            bar.refresh()
            if j["status"] in ("done", "failed", "cancelled"):
                closed.add(j["id"])
                bar.close()
    for j in last:
        line = f"{j['id']}  {j['input_name']}  {j['status']}"
        click.echo(line + (f": {j['error']}" if j["status"] == "failed" and j.get("error") else ""))
    return sum(j["status"] == "failed" for j in last)


def status(c: Client, job_id: str | None, filters: dict, as_json: bool) -> None:
    if job_id:
        job = c.job(job_id)
        if job is None:
            raise ServerError(f"the server has no job {job_id}", 404)
        click.echo(json.dumps(job, indent=2, sort_keys=True))
        return
    listing = c.jobs(**filters)
    jobs = listing["jobs"]
    if as_json:
        click.echo(json.dumps(jobs, indent=2, sort_keys=True))
        return
    rows = [("ID", "STATUS", "PROGRESS", "FOUND", "NODE", "CREATED", "INPUT")]
    for j in jobs:
        found = "-" if j.get("animals") is None else "none" if j["animals"] == 0 else \
            f"{j.get('tracks') or j['animals']} animal(s)"
        rows.append((j["id"], "pending" if j.get("pending_publish") else j["status"], f"{100 * j['progress']:.0f}%",
                     found, j.get("node") or "-", (j.get("created_at") or "").replace("T", " ")[:19], j["input_name"]))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for r in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1])
    shown = f"{len(jobs)} of {listing['total']}{'' if listing.get('total_exact', True) else '+'} jobs"
    click.echo(("no jobs match" if not jobs else shown))


def download(c: Client, job_id: str, out: Path, names: tuple[str, ...]) -> list[Path]:
    """The job's outputs as one zip (or the files ``names``) into ``out``."""
    from tqdm import tqdm
    job = c.job(job_id)
    if job is None:
        raise ServerError(f"the server has no job {job_id}", 404)
    if job["status"] != "done":
        raise ServerError(f"job {job_id} ({job['input_name']}) is {job['status']}: nothing to download yet")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:            # under a file, read-only
        raise WildswarmError(f"{out}: cannot write: {exc.strerror or exc}") from None
    stem = safe_name(job.get("output") or job["id"])
    if names:
        files = {f["name"]: f for f in job.get("files", [])}
        missing = [n for n in names if n not in files]
        if missing:
            raise ServerError(f"job {job_id} has no {', '.join(missing)}; it has: {', '.join(files)}")
        wanted = [(files[n]["url"], out / safe_name(n), files[n].get("size")) for n in names]
    else:
        wanted = [(job["links"]["zip"], out / f"{stem}.zip", None)]       # made as it is sent: no size known
    done = []
    for url, dest, size in wanted:
        with tqdm(desc=dest.name[:30], unit="B", unit_scale=True, file=sys.stderr, leave=False) as bar:
            def got(n: int, total: int) -> None:
                bar.total = total or None
                bar.update(n - bar.n)
            try:
                done.append(c.download(url, dest, got, size))
            except OSError as exc:        # the disk's: the server's own errors are ServerError (requests' too)
                raise WildswarmError(f"{dest}: cannot write: {exc.strerror or exc}") from None
        click.echo(str(dest))
    return done
