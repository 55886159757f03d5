"""Test helpers, in one place (ARCHITECTURE.md house rule 14).

``waiting``   wait_for: poll a condition with a deadline and a clear failure
``net``       free_port
``videos``    write_video: small synthetic MP4s
``fakes``     FakeBroker: an in-memory stand-in for unit tests of what talks to the broker
``procs``     Proc and settings_env: wildswarm subprocesses with exactly given settings
``services``  the real RabbitMQ and PostgreSQL the tests use (the project's own images,
              through pytest-docker and docker-compose)
``fixtures``  the pytest fixtures built on them (a plugin: tests/conftest.py loads it)
"""
