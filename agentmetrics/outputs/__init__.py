"""Outputs (HTML report, Prometheus, Datasette metadata, notebook and text views)."""
