"""The jobs page as a grid of results: each done video's poster frame (the annotated frame with the most
animals, saved by the worker), what was found, its length, profile and deployment; the filters, order and
paging as the list has them, bookmarkable in the URL."""
from __future__ import annotations

import re

from webkit import make_done_job, make_running_job
from wildswarm.layout import Layout


def test_the_grid_shows_posters_and_keeps_filters_in_its_links(client, store, settings, video_bytes):
    lay = Layout(settings.data)
    fox = make_done_job(store, video_bytes, name="fox", job_id="00c0ffee00c0ffe1")
    owl = make_done_job(store, video_bytes + b"1", name="owl", job_id="00c0ffee00c0ffe2")
    (lay.output / "fox" / "poster.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\0" * 64)
    (lay.output / "owl" / "poster.jpg").symlink_to("/etc/hostname")        # never served
    running = make_running_job(store)
    page = client.get("/jobs?view=grid").get_data(as_text=True)
    assert 'id="results-grid"' in page and 'id="jobs"' not in page            # no live table in the grid
    assert f'src="/jobs/{fox.id}/files/poster.jpg"' in page
    assert f'src="/jobs/{owl.id}/files/poster.jpg"' not in page
    cards = re.findall(r'<li class="result" data-id="([0-9a-f]+)"', page)
    assert cards == [running.id, owl.id, fox.id]                               # newest first
    assert page.count('class="found"') == 3 and 'class="status running"' in page
    assert client.get(f"/jobs/{fox.id}/files/poster.jpg").data.startswith(b"\xff\xd8")
    oldest = client.get("/jobs?view=grid&order=oldest&limit=2").get_data(as_text=True)
    assert re.findall(r'<li class="result" data-id="([0-9a-f]+)"', oldest) == [fox.id, owl.id]
    nxt = re.search(r'href="([^"]*offset=2[^"]*)"', oldest).group(1).replace("&amp;", "&")
    assert "view=grid" in nxt and "order=oldest" in nxt
    assert 'name="view" value="grid"' in oldest                               # the filter form stays in the grid
    listed = client.get("/jobs?status=done").get_data(as_text=True)
    assert 'id="jobs"' in listed and 'href="/jobs?status=done&amp;view=grid"' in listed


def test_the_listing_sorts_server_side_and_refuses_an_unknown_order(anon, bearer, store, video_bytes, openapi):
    make_done_job(store, video_bytes, name="fox", job_id="00c0ffee00c0ffe1")
    make_running_job(store, name="zebra.mp4")
    r = anon.get("/api/jobs?order=name", headers=bearer)
    openapi.check("GET", "/api/jobs", r)
    assert [j["input_name"] for j in r.get_json()["jobs"]] == ["fox.mp4", "zebra.mp4"]
    bad = anon.get("/api/jobs?order=random", headers=bearer)
    assert bad.status_code == 400 and "order must be one of: newest, oldest, animals, longest, name" in \
        bad.get_json()["error"]
