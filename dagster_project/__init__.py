"""Dagster definitions of the pipeline: one module per domain, merged in `definitions.py`."""
