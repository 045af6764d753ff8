"""pytest hooks, options and fixtures of pytest_attnlab.attention (loaded by pytest_attnlab.plugin)."""
