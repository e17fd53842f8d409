"""Model loading (open_clip names, hf-hub ids, local checkpoints) and curate's own configs."""
