"""One small module per attention variant; each exposes a factory returning a named variant."""
