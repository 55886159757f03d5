"""Benchmark: wildswarm's pipeline on each inference backend, overlapped or not, in the worker image
and on the host, against the bare forward passes and the old naive sequence.

    python -m bench.pipeline [--videos DIR] [--fps 5] [--models DIR] [--variants LIST] [--repeat N]
    make bench-pipeline

On the seed videos, in one run, on the same frames, each variant in its own worker process (so each
peak-memory figure is that of one worker), all with the same thread count:

torch          ``Pipeline(settings).analyze(video)`` with ``backend=torch``, stages in turn: the
               pipeline as it was before the inference backends (the baseline of the 2x target).
onnxruntime,   the same with every model on ONNX Runtime / OpenVINO (fp32, or ``--precision bf16``
openvino       on OpenVINO, or ``--precision int8``: the models' INT8 exports, calibrated on the
               benchmark's own videos first where there are none).
auto, overlap  ``backend=auto`` (each model on the fastest backend that passes its equality check),
               stages in turn / decode ahead and draw behind in threads.
default        the default profile as a worker runs it (every setting at its default: backend and
               overlap auto): frames/s per node.
container      ``default`` in the worker image (``--image``), the bench mounted into it; its
               "ready" time (process start to models loaded, imports included) against the host's.
whole-         ``default`` with PytorchWildlife's and DeepLabCut's packages imported whole first, as
libraries      workers did before ``families/_lean.py``: its ready time and peak memory against
               ``default``'s.
device-crops,  ``default`` / ``torch`` with the pose crops cut on the model's device
torch-device-  (``WILDSWARM_POSE_CROPS=device``; bench/crops.py measures the pose step alone).
crops
forward-*      the bare forward passes of one backend (or auto's choice) on the same frames and
               boxes: inputs prepared untimed with the libraries' own preprocessing.
naive          the old system (see below), the same model files and sampling rate.

It prints seconds per video, frames per second, CPU seconds, peak memory and start-up time per
variant; the ratios against the targets (default over torch >= 2x frames/s; wall over the chosen
backends' bare forward passes <= 1.10; container within 10 % of the host; peak < 3 GB; the naive
sequence >= 1.8x slower per frame); the backend each model got and its difference from PyTorch; and
each model's FLOPs per frame against the node's peak FLOP/s (bench/pipeline/limits.py). All of it
goes as JSON to bench/results/pipeline-<timestamp>.json.

The old system (variant ``naive``): what the original deployment did, per video, with the same model
files and the same requested sampling rate: PytorchWildlife's video helper
(``PytorchWildlife.utils.misc.process_video``) with a callback running MegaDetector
(``single_image_detection``) and the classifier on each box (``single_image_classification``) and
drawing them, writing an annotated video; then DeepLabCut's ``video_inference_superanimal`` on that
annotated video, with its own FasterRCNN detector (fasterrcnn_resnet50_fpn_v2) and its default batch
sizes. Models are loaded per video (inside the timing); library imports are not.

Measuring on a shared machine
-----------------------------
Other work on the machine only ever adds time, in bursts. So:
* Every variant but the naive one gets one worker process for the whole run, ``--parallel`` (4) at a
  time, in the order of ``--variants`` (figures compared with each other run side by side). A group
  loads its models and warms up before anything is timed; then the parent asks its workers for one
  video at a time, the order rotating, ``--repeat`` rounds (default 3). The waiting workers block on
  their stdin and take no CPU.
* Seconds per video are the best round of each variant, and the verdicts use them; the JSON keeps
  every round. Wall over bare forward passes is also given as back-to-back pairs (same video,
  seconds apart); when they disagree by more than 1.5x, the output says NOISY.
* The pipeline variants also time the wall time spent inside their models' forward calls during
  ``analyze`` (forward hooks on PyTorch modules, a wrapper around each ONNX runtime): wall over that
  time, in the same runs, is what the pipeline adds around the forward passes, untouched by load
  that comes and goes between runs.
* Beside wall seconds, each run records CPU seconds (all threads of the worker, and any processes
  it started); their ratios are printed too, as a cross-check less sensitive to other load.
* The naive sequence takes 3-4 minutes a round on 2 cores and clears its target by a wide margin, so
  it runs ``--repeat-old`` rounds (default 1), after the others, each round a fresh worker.

Choices, and why
----------------
* Weights. Real weights cannot be downloaded everywhere (not on the machines this project is
  built on). Where ``--models`` holds the real files (the names the libraries use), they are used.
  Otherwise untrained (random) stand-ins are built there once, through the libraries' own classes
  and in the real file formats (wildswarm's ``models.build_untrained``; DeepLabCut's detector via
  its own ``DETECTORS.build`` from ``PoseConfig.build_for_superanimal_inference``, saved as
  ``{"model": state_dict}``), and loaded through the real loading code. The compute per frame and
  per box is the same as with real weights; what the models output is meaningless, and the output
  says so.
* Boxes. With random weights every candidate box scores about 0.004, so at the usual threshold
  (0.2) nothing is detected and no pose model would ever run. The detection threshold is lowered
  to ``--threshold`` (0.001) in every variant, and each frame gets exactly ``--max-animals``
  (3) animal boxes everywhere: for wildswarm and the naive sequence MegaDetector's own NMS options are set on its
  ultralytics predictor, ``classes=[0]`` (animals) and ``max_det=3`` - without that cap NMS returns
  up to 300 random boxes per frame, and drawing, classifying and writing 300 boxes per frame is a
  load no real video gives; the bare forward passes take the pipeline's boxes. DeepLabCut in the
  naive sequence gets
  ``max_individuals=3`` and its detector's ``box_score_thresh`` (which is what filters its
  detections; ``bbox_threshold`` only filters what it draws) set to the same low value through
  ``customized_model_config`` (its own SuperAnimal config, that one value changed), so its pose
  model also runs on 3 boxes per frame.
* Same models, same sizes. The detector is MDV6-yolov9-c at the pipeline's default image size
  (640) in (a) and (b) (PytorchWildlife's MDV6 default is 1280; (b) sets ``predictor.args.imgsz``
  like wildswarm does). The classifier (default AI4GSnapshotSerengeti) runs in both (a) and (b):
  the old system had one, and (a) uses the same for a fair comparison (wildswarm's default has
  none). The pose model file is the same for (a) and (b).
* Sampling. Both get ``--fps`` (5, the old system's rate). PytorchWildlife's helper rounds the frame
  stride down (24 fps / 5 -> every 4th frame: 20-21 frames per seed video), wildswarm samples on the
  exact 5 fps grid (17-18 frames). The ratio (b)/(a) is printed both per video and per frame; the
  target is checked on the per-frame ratio, the conservative one.
* Warm-up. Before timing, each worker runs its variant once on a 1-second clip cut from the
  first video (``--no-warmup`` skips it), so one-time costs (first-call allocations, lazy
  imports) are out of every variant's per-video figure. (b) still loads its models inside each
  video's timing: that is what the old system did.
* Threads. Every worker calls ``torch.set_num_threads(--threads)`` (default: all cores) before
  loading anything, and again after each model load: ultralytics' ``select_device`` (run when
  PytorchWildlife loads MegaDetector v6) sets ``torch.set_num_threads(min(8, cores - 1))``, which
  is 1 on a 2-core machine. The output notes the count the libraries had left, and the count each
  worker ended with. A wildswarm Pipeline whose models all run on exported runtimes keeps torch at
  one thread for the pre- and post-processing (``Pipeline._settle_torch_threads``); the runtimes
  get ``--threads``.
"""
