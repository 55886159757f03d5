"""Finding the animals: what each video's analysis found is kept with its job, and the jobs page and
API filter on it (empty videos, a species, a profile, a deployment), server-side and bookmarkable."""
from __future__ import annotations

from wildswarm.jobs import JobQuery, JobStatus
from wildswarm.jobs.findings import findings_of, species_seen


def done(store, job_id: str, name: str, findings: dict | None, *, profile: str = "camera-trap",
         deployment: str | None = None):
    store.submit(job_id, name, 10, profile=profile, deployment_id=deployment)
    store.claim(job_id, "w/1", "w")
    return store.finish(job_id, "w/1", output=name[:-4], outputs=[], frames=5, untrained=False, timings={},
                        findings=findings)


def library(store):
    done(store, "a000000000000001", "empty-1.mp4", {"animals": 0, "tracks": 0, "species": {}})
    done(store, "a000000000000002", "zebras.mp4", {"animals": 3, "tracks": 4, "species": {"zebra": 3, "impala": 1}},
         profile="camera-trap-serengeti")
    done(store, "a000000000000003", "impala.mp4", {"animals": 1, "tracks": 1, "species": {"impala": 1}},
         profile="camera-trap-serengeti")
    done(store, "a000000000000004", "mouse.mp4", {"animals": 2, "tracks": 2, "species": {}},
         profile="lab-topview-mouse")
    done(store, "a000000000000005", "empty-2.mp4", {"animals": 0, "tracks": 0, "species": {}})
    store.submit("a000000000000006", "waiting.mp4", 10)                      # not analysed yet: no findings


def names(jobs) -> list[str]:
    return sorted(j.input_name for j in jobs)


def test_the_store_filters_on_what_was_found(store):
    library(store)
    assert names(store.list(JobQuery(animals=False))) == ["empty-1.mp4", "empty-2.mp4"]
    assert names(store.list(JobQuery(animals=True))) == ["impala.mp4", "mouse.mp4", "zebras.mp4"]
    assert names(store.list(JobQuery(species="impala"))) == ["impala.mp4", "zebras.mp4"]
    assert names(store.list(JobQuery(species="zebra", animals=True))) == ["zebras.mp4"]
    assert store.list(JobQuery(species="Zebra")) == [] and store.count(JobQuery(species="lion")) == 0
    assert names(store.list(JobQuery(profile="camera-trap-serengeti"))) == ["impala.mp4", "zebras.mp4"]
    assert species_seen(store) == ["impala", "zebra"]
    z = store.get("a000000000000002")
    assert (z.animals, z.tracks, z.species) == (3, 4, {"zebra": 3, "impala": 1})
    w = store.get("a000000000000006")
    assert w.status is JobStatus.QUEUED and (w.animals, w.tracks, w.species) == (None, None, {})


def test_findings_come_from_the_summary_counting_tracked_animals():
    summary = {"animals": {"max_per_frame": 2, "distinct": 3, "species": {"zebra": 40, "impala": 5}},
               "tracks": [{"id": 1, "species": "zebra"}, {"id": 2, "species": "zebra"}, {"id": 3, "species": "impala"}]}
    assert findings_of(summary) == {"animals": 2, "tracks": 3, "species": {"zebra": 2, "impala": 1}}
    no_tracks = {"animals": {"max_per_frame": 1, "distinct": 0, "species": {"zebra": 4}}, "tracks": []}
    assert findings_of(no_tracks)["species"] == {"zebra": 4}        # detections, where no track carries one
    assert findings_of({"test_aid": True}) == {} and findings_of({}) == {}


def test_the_api_and_the_page_filter_on_animals_species_and_profile(client, bearer, anon, store, openapi):
    library(store)
    r = anon.get("/api/jobs?animals=no", headers=bearer)
    openapi.check("GET", "/api/jobs", r)
    assert sorted(j["input_name"] for j in r.get_json()["jobs"]) == ["empty-1.mp4", "empty-2.mp4"]
    r = anon.get("/api/jobs?species=impala&profile=camera-trap-serengeti", headers=bearer)
    body = r.get_json()
    assert sorted(j["input_name"] for j in body["jobs"]) == ["impala.mp4", "zebras.mp4"] and body["total"] == 2
    zebras = next(j for j in body["jobs"] if j["input_name"] == "zebras.mp4")
    assert (zebras["animals"], zebras["tracks"], zebras["species"]) == (3, 4, {"zebra": 3, "impala": 1})
    for bad in ("animals=maybe", "species=" + "x" * 101, "profile=%01"):
        r = anon.get("/api/jobs?" + bad, headers=bearer)
        assert r.status_code == 400, bad
        openapi.check("GET", "/api/jobs", r)

    page = client.get("/jobs?animals=yes&species=zebra").get_data(as_text=True)
    assert "zebras.mp4" in page and "impala.mp4" not in page and "empty-1.mp4" not in page
    assert "4 animals · zebra 3, impala 1" in page and 'value="zebra"' in page           # found, and the filter kept
    assert '<option value="yes" selected>found</option>' in page and "camera-trap-serengeti" in page
    page = client.get("/jobs").get_data(as_text=True)
    assert "no animals" in page and '<option value="impala">' in page               # species offered as seen


def test_the_job_page_reads_the_summary_as_a_card(client, store, video_bytes):
    import json

    from webkit import make_done_job
    from wildswarm.layout import Layout
    job = make_done_job(store, video_bytes, name="zebra")
    folder = Layout(store.db.settings.data).output / "zebra"
    summary = json.loads((folder / "summary.json").read_text())
    summary.update(profile="camera-trap-serengeti",
                   models={"detector": {"name": "MDV6-yolov9-c"}, "classifier": {"name": "AI4GSnapshotSerengeti"},
                           "pose": {"name": "superanimal_quadruped"}},
                   settings={"fps": 5.0, "detection_threshold": 0.2, "detector_image_size": 640, "max_animals": 5,
                             "smooth": "savgol", "smooth_window": 7, "device": "cpu"},
                   animals={"max_per_frame": 2, "distinct": 2, "frames_with_animals": 4},
                   tracks=[{"id": 1, "name": "animal1", "first_frame": 0, "last_frame": 10, "first_s": 0.0,
                            "last_s": 1.0, "frames": 6, "max_conf": 0.91, "species": "zebra",
                            "species_confidence": 0.8},
                           {"id": 2, "name": "animal2", "first_frame": 4, "last_frame": 8, "first_s": 0.4,
                            "last_s": 0.8, "frames": 3, "max_conf": 0.5, "species": "zebra"}],
                   timings_s={"decode": 0.5, "detect": 2.0, "pose": 1.0, "render": 0.3, "write": 0.2, "total": 4.0},
                   model_load_s=3.2, host="node-7")
    (folder / "summary.json").write_text(json.dumps(summary))
    page = client.get(f"/jobs/{job.id}").get_data(as_text=True)
    assert "2 animals tracked, up to 2 in one frame, in 4 of 6 analysed frames." in page
    assert "<tr><td>zebra</td><td>2</td></tr>" in page and "animal1" in page and "0.0–1.0 s" in page
    for fact in ("<dt>Profile</dt><dd>camera-trap-serengeti</dd>", "<dt>Classifier</dt><dd>AI4GSnapshotSerengeti</dd>",
                 "<dt>Sampled</dt><dd>5 frames/s</dd>", "<dt>Smoothing</dt><dd>savgol over 7 frames</dd>",
                 "<dt>Frame size</dt><dd>160 × 96</dd>", f"<dt>File size</dt><dd>{len(video_bytes) / 1024:.1f} KiB</dd>"):
        assert fact in page, fact
    assert "4.0 s · 1.5 frames/s · models loaded in 3.2 s · on node-7" in page
    assert "detect 2.00 s (50%)" in page and 'width="50.0"' in page                   # the stage bar
    assert "Full summary.json" in page and "Timings S" not in page
    summary["animals"] = {"max_per_frame": 0, "distinct": 0, "frames_with_animals": 0}
    summary["tracks"] = []
    (folder / "summary.json").write_text(json.dumps(summary))
    assert "No animal in any of the 6 analysed frames." in client.get(f"/jobs/{job.id}").get_data(as_text=True)


def test_the_time_bar_fits_when_stages_overlap():
    """Decode, draw and encode run in threads beside the models, so stage timings can add up to more
    than the wall time; the bar then shows shares of the stages' time instead of running off the end."""
    from wildswarm.web.results import summary_card
    overlapped = {"decode": 1.0, "detect": 3.0, "pose": 2.0, "render": 1.5, "write": 0.5, "total": 6.0}
    card = summary_card({"timings_s": overlapped, "frames": {"analysed": 30}})
    bar = card["time"]["stages"]
    assert card["time"]["total"] == 6.0 and card["time"]["rate"] == 5.0      # the wall time stays the wall time
    assert abs(sum(st["width"] for st in bar) - 100) < 0.05
    assert all(st["x"] + st["width"] <= 100.01 for st in bar)
    assert [st["share"] for st in bar] == [12, 38, 25, 19, 6]
    in_turn = summary_card({"timings_s": {"detect": 2.0, "pose": 1.0, "total": 4.0}})["time"]["stages"]
    assert [st["width"] for st in in_turn] == [50.0, 25.0]                   # the rest of the wall: not in a stage
