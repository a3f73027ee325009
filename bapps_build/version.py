"""The tool's version: recorded in every build.json (kept apart so the core can read it without
importing the package's front door, which imports the core)."""
__version__ = "0.1.0"
