"""Self-contained demo: procedural inspection data and an end-to-end run with no download."""
