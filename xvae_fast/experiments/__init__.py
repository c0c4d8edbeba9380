"""Reproductions of the paper's experiments built on the trainer."""
