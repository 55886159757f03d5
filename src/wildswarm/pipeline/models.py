"""Model weights: where they live, how to get them, whether to trust them (the catalogue: ``specs``).

All weights sit in one folder (``Settings.models``; ``models/`` on the shared filesystem) under the
file names the libraries themselves use, so real files can be pre-placed by hand where no download
is possible.

Weights are code: checkpoints are Python pickles, which can run anything when loaded, in a worker
that holds the broker secret. So ``require()``, the pipeline's only way to a weight file, refuses
any file whose bytes match neither the checksum upstream publishes for it (pinned below, with its
source) nor its entry in ``weights.lock.json`` (``weights_lock``), which ``fetch``, ``trust`` and
``build_untrained`` write. Loaders then unpickle a re-hashed private copy, weights-only where the
format allows (``safeload``; docs/models.md).

``build_untrained`` writes an architecture with random weights through the libraries' own classes,
in the real file format, so the real loading and inference code runs where real weights cannot be
had; the lock records it as ``untrained``, outputs made with it say so, and a pipeline refuses it
unless untrained weights were asked for.
"""
from __future__ import annotations

import hashlib
import json
import os
import stat
import tempfile
from pathlib import Path

from wildswarm import __version__
from wildswarm.errors import MissingWeightsError, ModelError
from wildswarm.pipeline import weights_lock
from wildswarm.pipeline.specs import CATALOGUE, Checksum, ModelSpec, Weights, spec  # noqa: F401 (the catalogue's names, here too)


def _digests(path: Path, s: ModelSpec | None = None, chunk: int = 1 << 20) -> dict[str, str]:
    """SHA-256 of ``path`` (and the algorithm ``s`` publishes, in the same pass)."""
    algorithms = {"sha256"} | ({s.published.algorithm} if s is not None and s.published else set())
    hashes = {a: hashlib.new(a) for a in algorithms}
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            for h in hashes.values():
                h.update(block)
    return {a: h.hexdigest() for a, h in hashes.items()}


def sha256_of(path: Path) -> str:
    return _digests(path)["sha256"]


def _matches_published(s: ModelSpec, digests: dict[str, str]) -> bool:
    return s.published is not None and digests[s.published.algorithm] == s.published.digest.lower()


def weights_path(models_dir: Path, s: ModelSpec) -> Path:
    return Path(models_dir) / s.filename


def _remedies(s: ModelSpec) -> str:
    return (f"Fetch it again with `wildswarm models fetch {s.name}`, or, if you copied the real file in by "
            f"hand, record it with `wildswarm models trust {s.name}`")


def _missing(models_dir: Path, s: ModelSpec) -> MissingWeightsError:
    return MissingWeightsError(
        f"weights for {s.name} not found: {s.filename} is not in {Path(models_dir).resolve()}. "
        f"Run `wildswarm models fetch {s.name}` where the internet is reachable, or copy the file "
        f"{s.filename} (from {s.source}) into that folder and record it with `wildswarm models trust {s.name}`"
        + ("; for tests only, `wildswarm models untrained` writes random weights." if s.arch else "."))


def check(models_dir: Path, s: ModelSpec) -> Weights:
    """The weights of ``s`` if their bytes are the published file or the one recorded in the lock."""
    path = weights_path(models_dir, s)
    if not path.is_file():
        raise _missing(models_dir, s)
    entry = weights_lock.read(models_dir).get(s.filename)
    digests = _digests(path, s)
    digest = digests["sha256"]
    if entry is not None and entry.sha256 == digest:
        return Weights(s, path, digest, entry.how == "untrained",
                       f"{entry.how} {entry.when}, recorded in {weights_lock.LOCK_NAME}")
    if _matches_published(s, digests):
        return Weights(s, path, digest, False, f"published {s.published.algorithm} matches ({s.published.source})")
    lock = weights_lock.LOCK_NAME
    if entry is None and _legacy_untrained(path, digest):
        raise ModelError(
            f"refusing {path} ({s.name}): it is an untrained stand-in written by an older wildswarm (beside it: "
            f"{_sidecar(path).name}), and stand-ins are now recorded in {lock}. Rebuild it with `wildswarm models "
            f"untrained {s.name}` (WILDSWARM_UNTRAINED=1 rebuilds it too), or replace it with the real file. "
            + _remedies(s))
    why = (f"it has no entry in {lock}" if entry is None else
           f"it changed after it was recorded in {lock} (expected {entry.describe()})")
    pin = (f"it does not match the {s.published.describe()}" if s.published else "no checksum is published for it")
    raise ModelError(f"refusing {path} ({s.name}): its sha256 is {digest}; {why}, and {pin}. " + _remedies(s))


def require(models_dir: Path, s: ModelSpec, *, allow_untrained: bool) -> Weights:
    """The weights of ``s``, checked (see ``check``); untrained ones only where allowed."""
    w = check(models_dir, s)
    if w.untrained and not allow_untrained:
        raise ModelError(f"{w.path} holds untrained (random) weights; replace it with the real file, "
                         f"or set WILDSWARM_UNTRAINED=1 to run with it knowingly")
    return w


def state(models_dir: Path, s: ModelSpec) -> str:
    """How the file of ``s`` was recorded, without reading it: for listings (``check`` verifies)."""
    path = weights_path(models_dir, s)
    if not path.is_file():
        return "missing"
    entry = weights_lock.read(models_dir).get(s.filename)
    if entry is not None:
        return entry.how
    return "untrained (old)" if _sidecar(path).is_file() else "unrecorded"


def permission_warnings(models_dir: Path, specs: list[ModelSpec]) -> list[str]:
    """The weight files, the lock and the folder that others than their owner can write."""
    paths = [Path(models_dir), weights_lock.lock_path(models_dir)] + [weights_path(models_dir, s) for s in specs]
    warnings = []
    for p in dict.fromkeys(paths):
        try:
            mode = p.stat().st_mode
        except OSError:
            continue
        who = [w for bit, w in ((stat.S_IWGRP, "group"), (stat.S_IWOTH, "world")) if mode & bit]
        if who:
            warnings.append(f"{p} is {'- and '.join(who)}-writable: whoever can write it can replace what workers "
                            f"unpickle, and the lock that vouches for it; `chmod go-w {p}` (docs/models.md)")
    return warnings


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".untrained.json")


def _legacy_untrained(path: Path, digest: str) -> bool:
    """Whether an older wildswarm's ``<file>.untrained.json`` sidecar names these bytes.

    Read only to recognise such a stand-in so it can be rebuilt: never a reason to load a file, since
    whoever could write the weights could write the sidecar too.
    """
    try:
        data = json.loads(_sidecar(path).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("sha256") == digest


def _install(models_dir: Path, s: ModelSpec, tmp: Path, digest: str, *, source: str, how: str,
             only_if_unrecorded: bool = False) -> bool:
    """Rename ``tmp`` into place and record it, together, under the lock's mutex."""
    os.chmod(tmp, 0o644)
    entry = weights_lock.Entry(file=s.filename, model=s.name, sha256=digest, size=tmp.stat().st_size,
                               source=source, when=weights_lock.now(), how=how)
    dest = weights_path(models_dir, s)
    with weights_lock.updating(models_dir) as entries:
        old = entries.get(s.filename)
        if only_if_unrecorded and old is not None:
            return False  # someone else recorded it meanwhile
        if how == "untrained" and old is not None and old.how != "untrained" and dest.exists():
            raise ModelError(f"{dest} holds {old.how} weights; an untrained stand-in never replaces them")
        os.replace(tmp, dest)
        entries[s.filename] = entry
    _sidecar(dest).unlink(missing_ok=True)
    return True


def fetch(models_dir: Path, s: ModelSpec) -> Path:
    """Download the real weights of ``s`` with the library's own downloader, check and record them."""
    models_dir = Path(models_dir)
    models_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=models_dir, prefix=".fetch-") as tmpdir:
        tmp = Path(tmpdir) / s.filename
        try:
            from wildswarm.pipeline import families
            family = families.adapter(s.family)
            if hasattr(family, "download"):
                source = family.download(s, Path(tmpdir))
            else:
                import torch.hub
                torch.hub.download_url_to_file(s.source, str(tmp), progress=True)
                source = s.source
        except Exception as exc:  # network errors come in many library-specific types
            raise ModelError(f"could not download {s.name} from {s.source}: {exc}. Copy {s.filename} into "
                             f"{models_dir.resolve()} by hand instead, then run `wildswarm models trust "
                             f"{s.name}`") from None
        if not tmp.is_file():
            raise ModelError(f"download of {s.name} produced no {s.filename}")
        digests = _digests(tmp, s)
        if s.published and not _matches_published(s, digests):
            raise ModelError(f"downloaded {s.name} from {s.source}, but it does not match the "
                             f"{s.published.describe()}: got {digests[s.published.algorithm]}; nothing written")
        _install(models_dir, s, tmp, digests["sha256"], source=source, how="fetched")
    return weights_path(models_dir, s)


def trust(models_dir: Path, s: ModelSpec) -> Weights:
    """Record the file of ``s`` that someone copied in by hand (checked against a published checksum)."""
    path = weights_path(models_dir, s)
    if not path.is_file():
        raise _missing(models_dir, s)
    digests = _digests(path, s)
    digest = digests["sha256"]
    entry = weights_lock.read(models_dir).get(s.filename)
    if (entry is not None and entry.how == "untrained" and entry.sha256 == digest) or _legacy_untrained(path, digest):
        raise ModelError(f"{path} is an untrained stand-in (random weights); trusting it would pass it off as "
                         f"the real {s.name}. Copy the real file over it first")
    if s.published and not _matches_published(s, digests):
        raise ModelError(f"refusing to trust {path}: its {s.published.algorithm} is {digests[s.published.algorithm]}, "
                         f"which does not match the {s.published.describe()}; it is not the file upstream published")
    source = (f"placed by hand; published {s.published.algorithm} matches ({s.published.source})" if s.published
              else f"placed by hand; no published checksum, vouched for as the file from {s.source}")
    new = weights_lock.Entry(file=s.filename, model=s.name, sha256=digest, size=path.stat().st_size,
                             source=source, when=weights_lock.now(), how="trusted-by-hand")
    weights_lock.record(models_dir, new)
    _sidecar(path).unlink(missing_ok=True)
    return Weights(s, path, digest, False, f"{new.how} {new.when}, recorded in {weights_lock.LOCK_NAME}")


def build_untrained(models_dir: Path, s: ModelSpec, seed: int = 0, *, only_if_unrecorded: bool = False) -> Path:
    """Write ``s``'s architecture with random weights in the real format, recorded as ``untrained``."""
    if not s.arch:
        raise ModelError(f"{s.name}: its architecture is not published as a config, so no untrained "
                         f"stand-in can be built; use the real weights")
    import torch
    torch.manual_seed(seed)
    models_dir = Path(models_dir)
    models_dir.mkdir(parents=True, exist_ok=True)
    fd, tmpname = tempfile.mkstemp(dir=models_dir, prefix=f".{s.filename}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmpname)
    try:
        torch.save(_untrained_checkpoint(s), tmp)
        _install(models_dir, s, tmp, sha256_of(tmp), how="untrained", only_if_unrecorded=only_if_unrecorded,
                 source=f"random weights built by wildswarm {__version__} ({s.arch}, seed {seed})")
    finally:
        tmp.unlink(missing_ok=True)
    return weights_path(models_dir, s)


def ensure_untrained(models_dir: Path, s: ModelSpec, *, force: bool = False) -> str:
    """Build ``s``'s stand-in where missing; what was done: built, rebuilt, kept or left alone.

    A stand-in an older wildswarm wrote (with a sidecar) is rebuilt, never loaded; a file without a
    lock entry may be real weights copied in by hand, so it is left alone, as are recorded real ones.
    """
    path = weights_path(models_dir, s)
    if not path.exists():
        build_untrained(models_dir, s, only_if_unrecorded=True)
        return "built"
    entry = weights_lock.read(models_dir).get(s.filename)
    digest = sha256_of(path)
    if entry is None:
        if _legacy_untrained(path, digest):
            build_untrained(models_dir, s, only_if_unrecorded=True)
            return "rebuilt"
        return "left alone"
    if entry.how != "untrained" or entry.sha256 != digest:
        return "left alone"
    if force:
        build_untrained(models_dir, s)
        return "rebuilt"
    return "kept"


def _untrained_checkpoint(s: ModelSpec) -> dict:
    from wildswarm.pipeline import families
    return families.adapter(s.family).untrained_checkpoint(s)
