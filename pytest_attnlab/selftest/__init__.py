"""The gate's self-test: planted bugs that the correctness suite must catch."""
