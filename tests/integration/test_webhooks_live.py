"""Webhooks on a live system: real producer and worker processes, the real broker and job store, and a
receiver on 127.0.0.1 that is slow to answer. The notification arrives; nothing else waits for it."""
from __future__ import annotations

import json
import shutil

from kit.observe import all_finished, log_lines, wait_consuming
from kit.waiting import wait_for
from kit.webhooks import Receiver
from wildswarm.jobs import JobStatus
from wildswarm.layout import Layout
from wildswarm.producer import submit_file
from wildswarm.testing import write_clip


def test_a_slow_webhook_delays_nothing_but_its_own_post(broker_settings, store, intake, spawn, tmp_path):
    s = broker_settings.replace(notify_seconds=0.2, webhook_timeout_seconds=20.0,
                                webhook_allow_internal=True)  # its receiver listens on 127.0.0.1
    receiver = Receiver(delay=8.0)
    try:
        worker = spawn(s, "worker", node="w0")
        producer = spawn(s, "producer", node="p0")
        procs = (worker, producer)
        wait_consuming(s, 1, procs)
        first = submit_file(intake, write_clip(tmp_path / "first.mp4", seconds=0.2, frames=2),
                            webhook=receiver.url).job
        wait_for(lambda: receiver.got, 30, "the webhook's POST to arrive", procs=procs)
        # while the receiver takes its time, the producer admits a dropped video and the worker runs it
        shutil.copy(write_clip(tmp_path / "second.mp4", seconds=0.2, frames=2), Layout(s.data).input / "second.mp4")
        jobs = wait_for(lambda: all_finished(store, 2), 30, "the second job", procs=procs)
        assert store.get(first.id).notify_state == "waiting", "\n".join(log_lines(s))   # its POST still open
        assert {j.status for j in jobs.values()} == {JobStatus.DONE}
        wait_for(lambda: store.get(first.id).notify_state == "sent", 30, "the notification recorded", procs=procs)
        ((headers, body),) = receiver.got
        assert json.loads(body)["job"]["id"] == first.id and headers["X-Wildswarm-Event"] == "job.done"
        assert store.get(next(i for i in jobs if i != first.id)).notify_state is None     # it named no webhook
        wait_for(lambda: any(f"job {first.id}" in line and "webhook notified" in line for line in log_lines(s)), 10,
                 "the notification in the node log (written just after the record)", procs=procs)
    finally:
        receiver.close()
