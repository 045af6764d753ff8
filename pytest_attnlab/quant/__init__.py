"""quant: see docs/ARCHITECTURE.md."""
