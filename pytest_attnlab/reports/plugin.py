"""pytest hooks, options and fixtures of the report writers (loaded by pytest_attnlab.plugin)."""
