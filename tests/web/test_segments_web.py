"""A long video on the web: one job with one bar, its segments visible (done, running where, queued)."""
from wildswarm.jobs import segment_id

ID = "00000000000000bb"


def split_job(store):
    store.submit(ID, "long.mp4", 1000)
    store.claim(ID, "w1/a", "w1")
    store.split(ID, "w1/a", {"total": 30, "length": 12, "overlap": 4}, [False, False, False])
    first = store.claim(segment_id(ID, 0), "w2/b", "w2")
    store.finish(first.id, "w2/b", output="long", outputs=[], frames=12, untrained=True, timings={})
    running = store.claim(segment_id(ID, 1), "w3/c", "w3")
    store.progress(running.id, "w3/c", 5, 12)


def test_the_job_page_shows_one_bar_and_its_segments(client, store):
    split_job(store)
    page = client.get(f"/jobs/{ID}").get_data(as_text=True)
    assert 'id="job-segments"' in page and "3 segments" in page
    assert "1 done" in page and "1 running" in page and "1 queued" in page
    assert "w2" in page and "w3" in page and "5 of 12" in page
    assert "57%" in page                                   # one bar: 17 of 30 frames
    listing = client.get("/jobs").get_data(as_text=True)
    assert "long.mp4" in listing and segment_id(ID, 0) not in listing   # segments are not jobs of the list


def test_the_api_gives_the_segments_of_a_long_video(anon, bearer, store, openapi):
    split_job(store)
    r = anon.get(f"/api/jobs/{ID}", headers=bearer)
    openapi.check("GET", "/api/jobs/{job_id}", r)
    body = r.get_json()
    assert body["segments"] == 3 and body["frames_done"] == 17 and body["frames_total"] == 30
    assert [(p["segment"], p["status"], p["node"]) for p in body["segment_jobs"]] == [
        (0, "done", "w2"), (1, "running", "w3"), (2, "queued", None)]
    listed = anon.get("/api/jobs", headers=bearer).get_json()
    assert [j["id"] for j in listed["jobs"]] == [ID]
