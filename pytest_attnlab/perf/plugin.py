"""pytest hooks, options and fixtures of pytest_attnlab.perf (loaded by pytest_attnlab.plugin)."""
