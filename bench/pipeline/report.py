"""The printed report: per variant, the ratios against the targets, the backends chosen, and how
close each backend comes to the node's peak FLOP/s."""
from __future__ import annotations

import os
import platform
import statistics

from bench.pipeline.cli import DETECTOR, POSE, POSE_MODEL, TARGETS, VARIANTS


def report(args, videos, variants: dict[str, dict], prep: dict | None = None) -> dict:
    summ = {v: summarise(res["runs"]) for v, res in variants.items()}
    names = [v.name for v in videos]
    untrained = any(res.get("untrained") for res in variants.values())
    lines: list[str] = []
    w = lines.append

    def total(v, key="seconds"):
        return sum(summ[v][n][key] or 0.0 for n in names), sum(summ[v][n]["frames"] for n in names)

    def fps(v):
        secs, frames = total(v)
        return frames / secs if secs else 0.0

    w("")
    w("wildswarm pipeline benchmark" + ("  --  UNTRAINED (random) weights: outputs are meaningless; the compute "
                                        "is the same as with real weights" if untrained else ""))
    w(f"host {platform.node()}, {os.cpu_count()} cores, {args.threads} inference threads in every worker; detector "
      f"{DETECTOR} at {args.image_size} px, classifier {args.classifier}, pose {POSE}_{POSE_MODEL}; sampling "
      f"{args.fps:g} fps; {args.max_animals} boxes/frame (threshold {args.threshold:g}); ONNX precision "
      f"{args.precision}{'' if args.warmup else '; no warm-up'}")
    w(f"rounds: {args.repeat} per persistent variant, interleaved video by video; naive {args.repeat_old}. "
      f"s/video and cpu s are each the best round (noise on a shared machine only adds time)")
    w("")
    w(f"{'variant':<30} {'frames':>6} {'boxes':>5} {'s/video':>8} {'frames/s':>8} {'cpu s':>7} {'peak GB':>7} "
      f"{'ready s':>7}  all rounds (s)")
    for v in variants:
        secs, frames = total(v)
        cpu, _ = total(v, "cpu_seconds")
        boxes = sum(summ[v][n]["boxes"] or 0 for n in names)
        rounds = " | ".join(" ".join(f"{x:.1f}" for x in summ[v][n]["all_seconds"]) for n in names)
        ready = variants[v].get("ready_seconds")
        w(f"{VARIANTS[v][0]:<30} {frames:>6} {boxes:>5} {secs / len(names):>8.2f} {fps(v):>8.3f} "
          f"{cpu / len(names):>7.1f} {variants[v]['peak_rss_bytes'] / 1e9:>7.2f} "
          f"{'' if ready is None else f'{ready:.1f}':>7}  {rounds}")
    w("")
    ratios: dict[str, object] = {}
    checks: dict[str, bool] = {}

    def check(key, value, target, better, text):
        ok = value >= target if better == ">=" else value <= target
        ratios[key], checks[key] = value, ok
        w(f"{text}: {value:.2f}; target {better} {target:g}: {'met' if ok else 'MISSED'}")

    main = "default" if "default" in summ else "auto" if "auto" in summ else None
    if main and "torch" in summ:
        check("speedup_over_torch", fps(main) / fps("torch"), TARGETS["speedup_over_torch"], ">=",
              f"frames/s, {VARIANTS[main][0]} over PyTorch (before)")
        for v in ("onnxruntime", "openvino", "auto", "overlap"):
            if v in summ and v != main:
                ratios[f"{v}_over_torch"] = fps(v) / fps("torch")
                w(f"        {VARIANTS[v][0]} over PyTorch: {ratios[f'{v}_over_torch']:.2f}")
    forward = f"forward-{'auto' if main else 'torch'}"
    if main and forward in summ:
        (sm, _), (sf, _) = total(main), total(forward)
        check("wall_over_forward", sm / sf, TARGETS["wall_over_forward"], "<=",
              f"wall time, {VARIANTS[main][0]} over its backends' bare forward passes ({forward})")
        pairs = paired(variants, main, forward, "seconds")
        inside = [r["seconds"] / r["forward_inside_seconds"] for r in variants[main]["runs"]
                  if r.get("forward_inside_seconds")]
        ratios["wall_over_forward_pairs"] = pairs
        ratios["wall_over_own_forward"] = statistics.median(inside) if inside else None
        w(f"        back-to-back pairs {' '.join(f'{x:.2f}' for x in pairs)}; over the time inside its own forward "
          f"calls, same runs: {ratios['wall_over_own_forward'] or float('nan'):.2f}")
        if pairs and max(pairs) / min(pairs) > 1.5:
            w("        NOISY: the pairs disagree by more than 1.5x; other load on the machine dominates")
    for t in ("torch", "onnxruntime", "openvino"):
        if t in summ and f"forward-{t}" in summ:
            ratios[f"{t}_wall_over_forward"] = total(t)[0] / total(f"forward-{t}")[0]
            w(f"        {VARIANTS[t][0]} over its bare forward passes: {ratios[f'{t}_wall_over_forward']:.2f}")
    if "overlap" in summ and "auto" in summ:
        ratios["overlap_speedup"] = fps("overlap") / fps("auto")
        w(f"overlap: frames/s overlapped over in turn (same backends): {ratios['overlap_speedup']:.2f} "
          f"(auto keeps it {'on' if variants.get('default', {}).get('overlap') else 'off'} on this node)")
    if "container" in summ and main:
        check("container_over_host", total("container")[0] / total(main)[0], TARGETS["container_over_host"], "<=",
              "analysis time, the worker image over the same code on the host")
        rc, rh = variants["container"].get("ready_seconds"), variants[main].get("ready_seconds")
        if rc and rh:
            check("container_over_host_ready", rc / rh, TARGETS["container_over_host"], "<=",
                  f"start to models loaded (interpreter, imports, models, backends), container {rc:.1f} s "
                  f"over host {rh:.1f} s")
    if "naive" in summ and main:
        (sa, fa), (sb, fb) = total(main), total("naive")
        check("naive_over_default", (sb / fb) / (sa / fa), TARGETS["naive_over_default"], ">=",
              f"seconds per frame, the old naive sequence over {VARIANTS[main][0]}")
    if main:
        gb = variants[main]["peak_rss_bytes"] / 1e9
        ratios["peak_gb"], checks["peak_gb"] = gb, gb < TARGETS["peak_gb"]
        w(f"peak memory of a worker, {VARIANTS[main][0]}: {gb:.2f} GB; target < {TARGETS['peak_gb']:g} GB: "
          f"{'met' if checks['peak_gb'] else 'MISSED'}")
    w("")
    chosen = variants.get(main or "", {}).get("backends") or {}
    if chosen:
        w("backends chosen on this node (max relative difference from PyTorch on the probe; probe forward seconds):")
        for kind, c in chosen.items():
            secs = ", ".join(f"{b} {s:.3f}" for b, s in (c.get("seconds") or {}).items())
            refused = "; ".join(f"not {b}: {why}" for b, why in (c.get("refused") or {}).items())
            w(f"    {kind:<10} {c['model']:<24} {c['backend']:<11} {c['precision']:<4} diff {c['max_difference']:.2g} "
              f"(tolerance {c['tolerance']:g})  {secs}{'  ' + refused if refused else ''}")
        w("")
    limits = (prep or {}).get("limits")
    if limits:
        peak = limits["peak"]
        w(f"physical limit: {peak['cores']} cores x {peak['ghz']} GHz x {peak['fp32_lanes']} fp32 lanes ({peak['isa']}) "
          f"x {peak['fma_units']} FMA units x 2 = {peak['peak_gflops']:.0f} GFLOP/s fp32 peak (native bf16: "
          f"{'yes' if peak['bf16'] else 'no'}, VNNI int8: {'yes' if peak['vnni'] else 'no'})")
        f = limits["flops"]
        w("    " + ", ".join(f"{k} {v / 1e9:.2f} GFLOP" for k, v in f.items()))
        stage_flops = {"detect": ("detector per frame", "frames"), "classify": ("classifier per box", "boxes"),
                       "pose": ("pose per box", "boxes")}
        for v in [x for x in variants if x.startswith("forward-")]:
            parts = []
            for stage, (key, per) in stage_flops.items():
                secs = sum(summ[v][n]["timings"].get(stage, 0.0) for n in names)
                count = sum((summ[v][n][per] or 0) for n in names)
                if key in f and secs and count:
                    gflops = f[key] * count / secs / 1e9
                    parts.append(f"{stage} {gflops:.0f} GFLOP/s ({100 * gflops / peak['peak_gflops']:.0f}%)")
            w(f"    {VARIANTS[v][0]:<30} " + ", ".join(parts))
        w("")
    if main:
        st: dict[str, float] = {}
        for n in names:
            for k, val in summ[main][n]["timings"].items():
                st[k] = st.get(k, 0.0) + val
        tot = st.get("total") or 1.0
        w(f"{VARIANTS[main][0]}: where the time went (best rounds, both videos; stages in threads overlap):")
        w("    " + ", ".join(f"{k} {v:.2f} s ({100 * v / tot:.0f}%)" for k, v in st.items() if k != "total")
          + f"; total {tot:.2f} s")
    print("\n".join(lines), flush=True)
    return {"summary": summ, "ratios": ratios, "targets": TARGETS, "checks": checks,
            "all_targets_met": all(checks.values()) if checks else None, "untrained_weights": untrained,
            "table": lines}


def summarise(runs: list[dict]) -> dict[str, dict]:
    """Per video: the best (least disturbed) and the median seconds over rounds; frames per second."""
    by_video: dict[str, list[dict]] = {}
    for r in runs:
        by_video.setdefault(r["video"], []).append(r)
    out = {}
    for name, rs in by_video.items():
        best = min(rs, key=lambda r: r["seconds"])
        secs = best["seconds"]
        frames = best["frames"]
        cpus = [r["cpu_seconds"] for r in rs if r.get("cpu_seconds") is not None]
        out[name] = {"seconds": secs, "median_seconds": statistics.median(r["seconds"] for r in rs),
                     "forward_inside": best.get("forward_inside"),
                     "cpu_seconds": min(cpus) if cpus else None,
                     "frames": frames, "fps": frames / secs if secs else 0.0,
                     "seconds_per_frame": secs / frames if frames else 0.0, "boxes": best.get("boxes"),
                     "best_round": best["round"], "timings": best.get("timings", {}),
                     "all_seconds": [round(r["seconds"], 3) for r in rs]}
    return out


def paired(variants: dict[str, dict], num: str, den: str, key: str) -> list[float]:
    """num/den for each (video, round) both measured, back to back."""
    d = {(r["video"], r["round"]): r[key] for r in variants[den]["runs"] if r.get(key)}
    return [r[key] / d[(r["video"], r["round"])] for r in variants[num]["runs"]
            if r.get(key) and (r["video"], r["round"]) in d]
