"""The per-video analysis pipeline: video IO, models, detection, pose, rendering, outputs."""
