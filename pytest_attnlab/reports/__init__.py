"""Report writers: one small module per output format."""
