"""Limits that guard a process against hostile or huge inputs (kept apart: the settings need them
without importing the image decoders)."""

# The most pixels a source image may have: a decompression bomb is refused before it is decoded.
DEFAULT_MAX_PIXELS = 200_000_000
