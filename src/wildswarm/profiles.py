"""Analysis profiles: named sets of pipeline settings, one chosen per job.

A lab that films top-view mice and a project that runs forest camera traps share one stack but
not one set of models. A profile names the models and the pipeline settings it changes (sampling
rate, thresholds, image size, tracking, smoothing); everything it leaves out is the stack's own
setting (``WILDSWARM_<FIELD>``). Profiles are read from TOML, one table each:

* the shipped ones (``profiles.toml`` beside this module: ``camera-trap``, ``camera-trap-species``,
  ``camera-trap-serengeti``, ``lab-topview-mouse``);
* the operator's file (``WILDSWARM_PROFILES_FILE``, default ``<data>/profiles.toml``), whose
  profiles are added to them, replacing a shipped one of the same name.

A job names its profile (or gets ``WILDSWARM_PROFILE``); intake checks the name, the worker
resolves it when it runs the job and records the settings it used. :class:`ProfileBook` reads the
operator's file again when it changes, so an edit needs no restart; an edit that does not parse
is reported and the last good set is kept.
"""
from __future__ import annotations

import logging
import math
import re
import threading
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator

from wildswarm.config import Settings
from wildswarm.errors import ConfigError, ModelError

log = logging.getLogger(__name__)

SHIPPED = Path(__file__).with_name("profiles.toml")
NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,39}")   # also a folder name in input/

# The settings a profile may set, and their type; any other is the node's or the stack's alone
# (device, batch size: the node's hardware; segments: the cluster's).
FIELDS: dict[str, type] = {
    "detector": str, "classifier": str, "pose": str, "fps": float, "detector_image_size": int,
    "detection_threshold": float, "max_animals": int, "pose_threshold": float,
    "track_lost_seconds": float, "smooth": str, "smooth_window": int, "backend": str, "precision": str,
}
MODEL_FIELDS = ("detector", "classifier", "pose")


class ProfileError(ConfigError):
    """A profile is unknown, or a profiles file is malformed."""


@dataclass(frozen=True)
class Profile:
    name: str
    description: str = ""
    values: tuple[tuple[str, object], ...] = ()   # the settings it sets, in FIELDS order
    source: str = "shipped"                        # "shipped", or the operator's file

    def apply(self, settings: Settings) -> Settings:
        """``settings`` as this profile analyses: its values over the stack's, and its name."""
        return settings.replace(profile=self.name, **dict(self.values))

    def resolved(self, settings: Settings) -> dict:
        """Every setting a profile may set, as a job analysed with this one gets it."""
        s = self.apply(settings)
        return {f: getattr(s, f) for f in FIELDS}

    def models(self, settings: Settings) -> list[str]:
        s = self.apply(settings)
        return [m for m in (s.detector, s.classifier, s.pose) if m and m != "none"]

    def describe(self, settings: Settings) -> dict:
        return {"name": self.name, "description": self.description, "source": self.source,
                "sets": dict(self.values), "settings": self.resolved(settings)}


def _value(where: str, key: str, raw: object) -> object:
    kind = FIELDS[key]
    if kind is str and isinstance(raw, str):
        value: object = raw.strip()
    elif kind is int and isinstance(raw, int) and not isinstance(raw, bool):
        value = raw
    elif kind is float and isinstance(raw, (int, float)) and not isinstance(raw, bool) and math.isfinite(raw):
        value = float(raw)
    else:
        raise ProfileError(f"{where}: {key} = {raw!r} is not a {kind.__name__}")
    bad = {"fps": lambda v: v < 0, "detector_image_size": lambda v: not 32 <= v <= 4096 or v % 32,
           "detection_threshold": lambda v: not 0 <= v <= 1, "pose_threshold": lambda v: not 0 <= v <= 1,
           "max_animals": lambda v: not 1 <= v <= 100, "track_lost_seconds": lambda v: v <= 0}.get(key)
    if bad is not None and bad(value):
        limits = {"fps": "0 or more (0: every frame)", "detector_image_size": "a multiple of 32 from 32 to 4096",
                  "detection_threshold": "from 0 to 1", "pose_threshold": "from 0 to 1",
                  "max_animals": "from 1 to 100", "track_lost_seconds": "more than 0"}[key]
        raise ProfileError(f"{where}: {key} = {raw!r} must be {limits}")
    return value


def check_settings(settings: Settings) -> None:
    """:class:`ProfileError` if a setting a profile may set is out of the range a profile is held to
    (set in the environment or as a command's option instead)."""
    for key, kind in FIELDS.items():
        if kind in (int, float):
            _value("settings", key, getattr(settings, key))


def _check_models(where: str, values: dict) -> None:
    from wildswarm.pipeline import models as catalogue   # the catalogue only: no torch
    for kind in MODEL_FIELDS:
        name = values.get(kind)
        if name is None or (kind == "classifier" and name in ("", "none")):
            continue
        try:
            catalogue.spec(name, kind)
        except ModelError as exc:
            raise ProfileError(f"{where}: {exc}") from None


def parse(text: str, source: str) -> dict[str, Profile]:
    """The profiles in TOML ``text`` (from ``source``, named in errors): :class:`ProfileError` for any
    unknown key, wrong type, value out of range or model not in the catalogue."""
    from wildswarm.pipeline import smooth
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(f"{source}: not valid TOML: {exc}") from None
    profiles = {}
    for name, table in data.items():
        where = f"{source}: profile [{name}]"
        if not NAME.fullmatch(name):
            raise ProfileError(f"{where}: a profile name is 1 to 40 lower-case letters, digits, '-' or '_', "
                               "starting with a letter or digit (it is also a folder in input/)")
        if not isinstance(table, dict):
            raise ProfileError(f"{where}: must be a table of settings")
        unknown = sorted(set(table) - set(FIELDS) - {"description"})
        if unknown:
            raise ProfileError(f"{where}: {', '.join(unknown)} cannot be set by a profile (it may set: "
                               f"description, {', '.join(FIELDS)})")
        description = table.get("description", "")
        if not isinstance(description, str):
            raise ProfileError(f"{where}: description must be a string")
        values = {k: _value(where, k, table[k]) for k in FIELDS if k in table}
        _check_models(where, values)
        if "smooth" in values or "smooth_window" in values:
            try:
                smooth.check(values.get("smooth", "savgol"), values.get("smooth_window", 5))
            except ConfigError as exc:
                raise ProfileError(f"{where}: {exc}") from None
        if "backend" in values or "precision" in values:
            from wildswarm.pipeline.backends import check_choice   # numpy only: no torch
            try:
                check_choice(values.get("backend", "auto"), values.get("precision", "fp32"))
            except ModelError as exc:
                raise ProfileError(f"{where}: {exc}") from None
        profiles[name] = Profile(name, description.strip(), tuple(values.items()), source)
    return profiles


class Profiles:
    """One loaded set of profiles, and which one a job that names none gets."""

    def __init__(self, profiles: dict[str, Profile], default: str):
        self._profiles = dict(profiles)
        if default not in self._profiles:
            raise ProfileError(f"WILDSWARM_PROFILE={default!r} is not a profile; there are: {', '.join(self.names())}")
        self.default = default

    def names(self) -> list[str]:
        return list(self._profiles)

    def __iter__(self) -> Iterator[Profile]:
        return iter(self._profiles.values())

    def __contains__(self, name: object) -> bool:
        return name in self._profiles

    def get(self, name: str | None = None) -> Profile:
        """The profile ``name`` (None or "": the default one); :class:`ProfileError` if there is none."""
        name = name or self.default
        try:
            return self._profiles[name]
        except KeyError:
            raise ProfileError(f"there is no analysis profile {name!r}; there are: {', '.join(self.names())}") \
                from None

    def models(self, settings: Settings) -> list[str]:
        """Every model any profile needs, each once."""
        return list(dict.fromkeys(m for p in self for m in p.models(settings)))


def load(settings: Settings) -> Profiles:
    """The shipped profiles and the operator's (``settings.profiles_path``, where it exists)."""
    profiles = {n: replace(p, source="shipped")
                for n, p in parse(SHIPPED.read_text(encoding="utf-8"), "shipped profiles").items()}
    path = settings.profiles_path
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        text = None
    except OSError as exc:
        raise ProfileError(f"{path}: cannot read the profiles file: {exc.strerror}") from None
    if text is not None:
        profiles.update(parse(text, str(path)))
    for p in profiles.values():
        _check_resolved(p, settings)
    return Profiles(profiles, settings.profile)


def _check_resolved(profile: Profile, settings: Settings) -> None:
    """What ``profile`` sets, together with the stack's settings it leaves (smoothing and its window, backend
    and precision): parse() checks a profile's values with the defaults, the pipeline with the stack's."""
    where = f"{profile.source}: profile [{profile.name}]"
    sets = dict(profile.values)
    s = profile.apply(settings)
    if "smooth" in sets or "smooth_window" in sets:
        from wildswarm.pipeline import smooth
        try:
            smooth.check(s.smooth, s.smooth_window)
        except ConfigError as exc:
            raise ProfileError(f"{where}: {exc} (with the stack's settings)") from None
    if "backend" in sets or "precision" in sets:
        from wildswarm.pipeline.backends import check_choice
        try:
            check_choice(s.backend, s.precision)
        except ModelError as exc:
            raise ProfileError(f"{where}: {exc} (with the stack's settings)") from None


class ProfileBook:
    """The profiles as they are now: the operator's file is read again whenever it changes.

    An edit that breaks the file keeps the last good set (and says why in :attr:`problem` and the
    log); a broken file on the first read is an error, so a service does not start on it.
    """

    def __init__(self, settings: Settings):
        self.settings = settings
        self._lock = threading.Lock()
        self._stamp: tuple | None = None
        self._profiles = load(settings)
        self._stamp = self._stat()
        self.problem: str | None = None

    def _stat(self) -> tuple | None:
        try:
            st = self.settings.profiles_path.stat()
        except OSError:
            return None
        return st.st_ino, st.st_size, st.st_mtime_ns

    def current(self) -> Profiles:
        with self._lock:
            stamp = self._stat()
            if stamp != self._stamp:
                self._stamp = stamp
                try:
                    self._profiles = load(self.settings)
                    self.problem = None
                    log.info("profiles read again from %s: %s", self.settings.profiles_path,
                             ", ".join(self._profiles.names()))
                except ProfileError as exc:
                    self.problem = f"{exc} (the profiles read before stay in use)"
                    log.error("%s", self.problem)
            return self._profiles

    def get(self, name: str | None = None) -> Profile:
        return self.current().get(name)
