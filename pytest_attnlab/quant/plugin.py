"""pytest hooks, options and fixtures of pytest_attnlab.quant (loaded by pytest_attnlab.plugin)."""
