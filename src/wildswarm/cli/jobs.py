"""``wildswarm worker|producer|submit|status``: the job system's commands."""
