"""Training-side code: synthetic phantom generator and training scripts."""
