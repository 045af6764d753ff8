"""perf: see docs/ARCHITECTURE.md."""
