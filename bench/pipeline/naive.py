"""The old system: PytorchWildlife's video helper, then DeepLabCut's own video inference."""
from __future__ import annotations

import contextlib
import time
from pathlib import Path

from bench.pipeline.cli import DETECTOR, DLC_DETECTOR, DLC_DETECTOR_FILE, POSE, POSE_MODEL
from bench.pipeline.common import _cap_boxes, _cpu, _enforce_threads, _log
from bench.pipeline.prepare import dlc_detector_untrained


def run_old_system(args, out: dict) -> None:
    # library imports once, before any timing (the old worker imported them once too)
    import supervision as sv
    from PytorchWildlife.models import classification as pw_classification
    from PytorchWildlife.models import detection as pw_detection
    from PytorchWildlife.utils.misc import process_video
    from deeplabcut.modelzoo.video_inference import video_inference_superanimal
    from deeplabcut.pose_estimation_pytorch.config import PoseConfig
    from wildswarm.pipeline import models as cat

    det_path = cat.weights_path(args.models, cat.spec(DETECTOR))
    cls_spec = cat.spec(args.classifier) if args.classifier != "none" else None
    pose_path = cat.weights_path(args.models, cat.spec(POSE))
    dlc_det_path = args.models / DLC_DETECTOR_FILE
    specs = [cat.spec(DETECTOR), cat.spec(POSE)] + ([cls_spec] if cls_spec else [])
    out["untrained"] = (any(cat.require(args.models, s, allow_untrained=True).untrained for s in specs)
                        or dlc_detector_untrained(dlc_det_path))

    def one_video(video: Path, dest: Path) -> dict:
        dest.mkdir(parents=True, exist_ok=True)
        t0, cpu0 = time.perf_counter(), _cpu()
        # --- step 1: PytorchWildlife: detector + classifier, annotated video -----------------------
        detector = pw_detection.MegaDetectorV6(weights=str(det_path), device="cpu", pretrained=False,
                                               version=cat.spec(DETECTOR).options["version"])
        _enforce_threads(args, out, "after MegaDetectorV6()")
        detector.predictor.args.imgsz = args.image_size
        detector.predictor.args.verbose = False
        _cap_boxes(detector.predictor, args.max_animals)
        classifier = None
        if cls_spec:
            classifier = getattr(pw_classification, cls_spec.options["module"])(
                weights=str(cat.weights_path(args.models, cls_spec)), device="cpu", pretrained=False)
        boxes = sv.BoxAnnotator(thickness=2)
        labels = sv.LabelAnnotator(text_scale=0.5, text_thickness=1)
        frames = 0

        def callback(frame, index):
            nonlocal frames
            frames += 1
            rgb = frame[..., ::-1].copy()   # process_video hands over BGR; the models expect RGB
            res = detector.single_image_detection(rgb, img_path=str(index), det_conf_thres=args.threshold)
            det = res["detections"]
            texts = []
            for xyxy, label in zip(det.xyxy, res["labels"]):
                if classifier is not None:
                    crop = sv.crop_image(image=rgb, xyxy=xyxy)
                    c = classifier.single_image_classification(crop)
                    label = f"{c['prediction']} {c['confidence']:.2f}"
                texts.append(label)
            annotated = labels.annotate(boxes.annotate(rgb, det), det, labels=texts)
            return annotated                # process_video converts RGB -> BGR when writing

        annotated_video = dest / f"{video.stem}_annotated.mp4"
        process_video(str(video), str(annotated_video), callback, target_fps=args.fps)
        t1 = time.perf_counter()
        del detector, classifier
        # --- step 2: DeepLabCut SuperAnimal on the annotated video, with its own detector --------
        cfg = PoseConfig.build_for_superanimal_inference(POSE, model_name=POSE_MODEL, detector_name=DLC_DETECTOR,
                                                         max_individuals=args.max_animals, device="cpu")
        cfg["detector"]["model"]["box_score_thresh"] = args.threshold
        with open(dest / "deeplabcut.log", "a") as log, contextlib.redirect_stdout(log):  # its chatter
            video_inference_superanimal([str(annotated_video)], POSE, model_name=POSE_MODEL,
                                        detector_name=DLC_DETECTOR, dest_folder=str(dest),
                                        max_individuals=args.max_animals, bbox_threshold=args.threshold,
                                        device="cpu", customized_pose_checkpoint=str(pose_path),
                                        customized_detector_checkpoint=str(dlc_det_path),
                                        customized_model_config=cfg)
        t2 = time.perf_counter()
        return {"frames": frames, "seconds": t2 - t0, "cpu_seconds": _cpu() - cpu0,
                "timings": {"pytorchwildlife": round(t1 - t0, 4), "deeplabcut": round(t2 - t1, 4)}}

    if args.warmup_clip:
        one_video(args.warmup_clip, args.workdir / "b-warmup")
    for video in args.video:
        res = one_video(video, args.workdir / f"b-{args.round}")
        out["runs"].append({"video": video.name, "round": args.round, **res})
        _log(f"(b) {video.name}: {res['frames']} frames in {res['seconds']:.1f} s "
             f"(PytorchWildlife {res['timings']['pytorchwildlife']:.1f} s, "
             f"DeepLabCut {res['timings']['deeplabcut']:.1f} s)")


