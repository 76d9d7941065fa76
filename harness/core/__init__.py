"""Core layer: the data model of a conformance run. Imports no pytest and no other layer."""
