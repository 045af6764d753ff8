"""Metric rows, the recorder that tests write through, and comparison helpers."""
