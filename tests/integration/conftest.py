"""Tests against the real RabbitMQ and PostgreSQL (see kit.services) and real wildswarm processes.

Every test gets its own queue, job-store schema and data root (kit.fixtures), so tests never meet;
processes started here are ended by pid.
"""
