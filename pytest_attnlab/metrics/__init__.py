"""Metric rows and metrics.csv, the recorder that tests write through, and tensor similarity helpers."""
