"""What a worker's run of one job ends in (:class:`Verdict`), which tells the worker what to tell the
broker; and what the runner needs of an analyser."""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Callable, Protocol

from wildswarm.messages import JobMessage


class Analyzer(Protocol):
    """What the runner needs of :class:`~wildswarm.pipeline.run.Pipeline` (or a test aid)."""

    def analyze(self, video: Path, out_root: Path, *, name: str | None = None,
                progress: Callable[[int, int], None] | None = None): ...


class Outcome(str, Enum):
    DONE = "done"                # analysed and recorded; ack
    FAILED = "failed"            # failed for good, recorded; ack
    RETRIED = "retried"          # failed, attempts left: given back; publish it delayed, ack
    DUPLICATE = "duplicate"      # a message for a finished job; ack
    SKIPPED = "skipped"          # a second message for a job running elsewhere; ack
    DEFERRED = "deferred"        # a redelivery while another worker's lease lives: publish it delayed, ack
    LOST = "lost"                # this worker's lease was taken over mid-job; ack, record nothing
    REJECTED = "rejected"        # malformed, or no job behind it; dead-lettered with the reason, ack
    INTERRUPTED = "interrupted"  # the worker stopped first; given back, no ack: delivered again
    SPLIT = "split"              # a long video handed to its segment jobs: publish their messages, ack
    CANCELLED = "cancelled"      # a person cancelled it while it ran: stopped, nothing recorded; ack


@dataclass(frozen=True)
class Verdict:
    outcome: Outcome
    delay: float = 0.0           # RETRIED, DEFERRED: publish the message again after this long
    reason: str = ""             # REJECTED: why
    messages: tuple[JobMessage, ...] = ()  # SPLIT: the segment jobs' messages
    message: JobMessage | None = None      # RETRIED: publish this one (not the delivery's) again later
