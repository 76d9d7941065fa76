"""Report layer: JSON-Lines records in, one self-contained HTML parity report out."""
