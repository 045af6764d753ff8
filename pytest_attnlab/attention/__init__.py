"""attention: see docs/ARCHITECTURE.md."""
