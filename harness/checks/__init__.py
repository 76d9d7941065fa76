"""Checks layer: running targets and judging their outputs, as a library (no pytest)."""
