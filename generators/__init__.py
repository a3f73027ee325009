"""CNN-based distortions (issue 3)."""
