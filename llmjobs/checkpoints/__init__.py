"""Tiny random-weight checkpoints, built locally, so that everything runs without downloads."""
