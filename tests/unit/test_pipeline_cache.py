"""The worker's pipeline cache: one load per set of settings, least recently used dropped when the
models' memory would pass the budget. The pipeline here is a small stand-in that reports its size;
tests/pipeline/test_profiles_worker.py runs the real pipelines."""
import pytest

from wildswarm.config import Settings
from wildswarm.pipeline.cache import Fixed, PipelineCache, memory_bytes
from wildswarm.profiles import ProfileError

MB = 1024 ** 2


class Sized:
    """A stand-in pipeline that knows its models' memory: 100 MB."""

    memory_bytes = 100 * MB

    def __init__(self, settings: Settings):
        self.settings = settings


@pytest.fixture
def settings(tmp_path) -> Settings:
    s = Settings(data=tmp_path / "data")
    s.profiles_path.parent.mkdir(parents=True)
    s.profiles_path.write_text('[same-as-camera-trap]\ndescription = "no changes"\n')
    return s


def test_alternating_profiles_loads_each_once(settings):
    cache = PipelineCache(settings, factory=Sized, budget_bytes=1024 * MB)
    got = [cache.get(p) for p in ("camera-trap", "lab-topview-mouse") * 3]
    assert cache.loads == {"camera-trap": 1, "lab-topview-mouse": 1}
    assert got[0].analyzer is got[2].analyzer is got[4].analyzer
    assert got[1].analyzer.settings.pose == "superanimal_topviewmouse" and got[1].profile == "lab-topview-mouse"
    assert got[1].settings["fps"] == 10.0 and cache.used == 200 * MB


def test_profiles_that_resolve_alike_share_one_pipeline(settings):
    cache = PipelineCache(settings, factory=Sized)
    a, b = cache.get("camera-trap"), cache.get("same-as-camera-trap")
    assert a.analyzer is b.analyzer and cache.loads == {"camera-trap": 1}
    assert cache.profiles_loaded() == [["camera-trap", "same-as-camera-trap"]]


def test_the_memory_budget_drops_the_least_recently_used(settings):
    cache = PipelineCache(settings, factory=Sized, budget_bytes=250 * MB)   # room for two
    for p in ("camera-trap", "lab-topview-mouse", "camera-trap", "camera-trap-species"):
        cache.get(p)
    # the third pipeline pushed out lab-topview-mouse, used less recently than camera-trap
    assert cache.profiles_loaded() == [["camera-trap"], ["camera-trap-species"]] and cache.used == 200 * MB
    cache.get("lab-topview-mouse")
    assert cache.loads == {"camera-trap": 1, "lab-topview-mouse": 2, "camera-trap-species": 1}


def test_one_pipeline_over_the_budget_still_runs_alone(settings):
    cache = PipelineCache(settings, factory=Sized, budget_bytes=50 * MB)
    first = cache.get("camera-trap")
    assert cache.profiles_loaded() == [["camera-trap"]]
    second = cache.get("lab-topview-mouse")
    assert cache.profiles_loaded() == [["lab-topview-mouse"]] and first.analyzer is not second.analyzer


def test_an_unknown_profile_loads_nothing(settings):
    cache = PipelineCache(settings, factory=Sized)
    with pytest.raises(ProfileError, match="no analysis profile 'owls'"):
        cache.get("owls")
    assert cache.loads == {}


def test_a_job_without_a_profile_gets_the_default(settings):
    cache = PipelineCache(settings.replace(profile="lab-topview-mouse"), factory=Sized)
    assert cache.get(None).profile == "lab-topview-mouse"
    assert Fixed("x").get(None).profile == "" and Fixed("x").get("a").analyzer == "x"


def test_memory_bytes_counts_every_network_tensor_once():
    torch = pytest.importorskip("torch")

    class Holder:
        def __init__(self):
            self.net = torch.nn.Linear(10, 10)                     # 110 float32
            self.parts = {"bn": torch.nn.BatchNorm1d(4)}           # 8 parameters + 8 buffers + 1 int64
            self.again = [self.net]                                # shared: counted once

    assert memory_bytes(Holder()) == 110 * 4 + 16 * 4 + 8


def test_the_cache_counts_loads_reuses_and_drops_in_its_metrics(settings):
    from prometheus_client import REGISTRY

    def count(result: str) -> float:
        return REGISTRY.get_sample_value("wildswarm_pipelines_total", {"result": result}) or 0.0

    before = {r: count(r) for r in ("loaded", "reused", "dropped")}
    cache = PipelineCache(settings, factory=Sized, budget_bytes=150 * MB)
    for p in ("camera-trap", "camera-trap", "lab-topview-mouse"):
        cache.get(p)
    assert {r: count(r) - before[r] for r in before} == {"loaded": 2, "reused": 1, "dropped": 1}
    assert REGISTRY.get_sample_value("wildswarm_pipeline_cache_bytes") == 100 * MB
