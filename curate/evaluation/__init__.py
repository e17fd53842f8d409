"""`curate eval`: train a small CLIP per arm and seed and compare arms on evaluation sets (docs/eval.md)."""
