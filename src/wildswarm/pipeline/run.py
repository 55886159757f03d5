"""Pipeline: load models once, then analyse videos one after another.

(Interface fixed; implementation in progress.)

    pipeline = Pipeline(settings)              # loads detector, classifier, pose model
    result = pipeline.analyze(video, out_root, name=None, progress=cb)
    # cb(frames_done, frames_total) is called as frames are analysed.
    # Writes out_root/<name>/ atomically (temp folder + rename, replacing an older one).
    # Raises VideoError (bad input), MissingWeightsError/ModelError, PipelineError.
"""
