"""One module per command: each composes the building blocks (capture, directions, quality, formats, circuits)."""
