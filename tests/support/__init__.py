"""Helpers shared by the test packages: the real-broker exchange harness, RabbitMQ links, audit runs.

Importable as `tests.support.*`: `tests` is a package, so every test module has a unique name. Fixtures defined
here are registered by the conftest.py of the package that uses them.
"""
