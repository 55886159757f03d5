"""Jobs: their model, and the job store in PostgreSQL that owns their state.

``model``   :class:`Job`, :class:`JobStatus`, :func:`job_id_for`
``db``      the connection pool and the schema's migrations
``store``   :class:`JobStore`: the named transitions (the only writers of job state) and queries
``query``   :class:`JobQuery`: a listing's filters, order and page
``deployments``  where and when videos were recorded
``legacy``  a one-time import of the JSON records of earlier versions
"""
from wildswarm.jobs.model import ID_LENGTH, Job, JobStatus, job_id_for, segment_id
from wildswarm.jobs.query import JobQuery
from wildswarm.jobs.store import JobStore

__all__ = ["ID_LENGTH", "Job", "JobQuery", "JobStatus", "JobStore", "job_id_for", "segment_id"]
