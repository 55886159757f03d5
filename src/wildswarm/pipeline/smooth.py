"""Smoothing each animal's keypoints over time, as DeepLabCut's ``filterpredictions`` does.

The filtered table has the raw table's shape and index and is written beside it
(``keypoints_filtered.h5/.csv``); the raw one is never changed. Each body part
of each track is filtered along time over the runs of frames where it was seen
with a likelihood of at least the pose threshold: a gap (the animal hidden, a
frame where it was not detected, a doubtful keypoint) is neither filled nor
smoothed across, and doubtful points keep their raw values.

* ``median``: a running median over ``window`` frames (scipy.ndimage, edges
  repeat the nearest value): removes single-frame jumps, DeepLabCut's default.
* ``savgol``: a Savitzky-Golay filter (quadratic, scipy.signal) over ``window``
  frames: smooths jitter and keeps the shape of fast movements; runs shorter
  than the window are left raw.
"""
from __future__ import annotations

import numpy as np

METHODS = ("none", "median", "savgol")


def check(method: str, window: int) -> None:
    from wildswarm.errors import ConfigError
    if method not in METHODS:
        raise ConfigError(f"smoothing {method!r} is not one of {', '.join(METHODS)}")
    if method != "none" and (window < 3 or window % 2 == 0):
        raise ConfigError(f"smoothing window {window} must be an odd number of frames, 3 or more")


def _runs(mask: np.ndarray):
    """(start, stop) of each run of True."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(np.int8), [0]])))
    return zip(edges[::2], edges[1::2])


def _filter(values: np.ndarray, method: str, window: int) -> np.ndarray:
    if method == "median":
        from scipy.ndimage import median_filter
        return median_filter(values, size=window, mode="nearest")
    from scipy.signal import savgol_filter
    if len(values) < window:
        return values
    return savgol_filter(values, window, polyorder=2)


def smooth_table(table, *, method: str, window: int, pose_threshold: float):
    """A filtered copy of a DeepLabCut-shaped keypoint table (see the module's docstring)."""
    check(method, window)
    if method == "none" or table.empty:
        return table.copy()
    values = table.to_numpy(np.float64, copy=True)
    raw = table.to_numpy(np.float64)
    cols = table.columns
    for key in cols.droplevel("coords").unique():
        ix, iy, ip = (cols.get_loc((*key, c)) for c in ("x", "y", "likelihood"))
        x, y, p = raw[:, ix], raw[:, iy], raw[:, ip]
        ok = ~np.isnan(x) & ~np.isnan(y) & (np.nan_to_num(p, nan=-1.0) >= pose_threshold)
        for a, b in _runs(ok):
            values[a:b, ix] = _filter(x[a:b], method, window)
            values[a:b, iy] = _filter(y[a:b], method, window)
    import pandas as pd
    return pd.DataFrame(values, index=table.index.copy(), columns=cols.copy())
