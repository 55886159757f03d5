"""The named errors of wildswarm, in one place.

Commands turn a :class:`WildswarmError` into a one-line message and a non-zero
exit status; anything else is a bug and keeps its traceback.
"""


class WildswarmError(Exception):
    """Base of every error wildswarm raises on purpose."""


class ConfigError(WildswarmError):
    """A setting is missing or malformed."""


class VideoError(WildswarmError):
    """An input is missing, not a video, corrupt, truncated or empty."""


class ModelError(WildswarmError):
    """A model is unknown, or its weights are missing or do not verify."""


class MissingWeightsError(ModelError):
    """A weight file is not in the models directory."""


class PipelineError(WildswarmError):
    """Analysis failed for a reason other than the input or the weights."""


class PlanChanged(PipelineError):
    """A video's segments were planned under another key: other settings, another version or weights
    (a rolling update), or another video under the same name. ``differs`` says what, in words."""

    def __init__(self, name: str, differs: str):
        super().__init__(f"{name}: its segments were planned under other settings ({differs}); plan it again")
        self.differs = differs


class MessageError(WildswarmError):
    """A queue message cannot be decoded (malformed, wrong schema version)."""


class BrokerError(WildswarmError):
    """The broker cannot be reached, or refused an operation."""


class JobError(WildswarmError):
    """A job record is missing or cannot be read."""


class JobConflict(JobError):
    """The job is not in a state that allows what was asked (HTTP 409)."""


class JobStoreError(WildswarmError):
    """The job store (PostgreSQL) refused an operation."""


class JobStoreDataError(JobStoreError):
    """A value the job store cannot keep (a NUL byte in text, a number or time out of range): the
    caller's input, not an outage (the web answers 400, not 503)."""


class JobStoreUnavailable(JobStoreError):
    """The job store cannot be reached now; the same operation may work later."""


class UnsafePathError(WildswarmError):
    """A path built from user input would leave the data root."""


class ExportError(WildswarmError):
    """An export cannot be made as asked: what is missing, video by video (never invented)."""

    def __init__(self, message: str, problems=()):
        self.problems = list(problems)
        super().__init__(message + "".join(f"\n  - {p}" for p in self.problems))
