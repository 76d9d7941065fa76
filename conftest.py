"""Thin on purpose: the harness's pytest plugin does the work."""

pytest_plugins = ["harness.plugin"]
