"""Pytest glue: the harness as a pytest plugin (registered through the ``pytest11`` entry point)."""
