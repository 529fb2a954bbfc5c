"""Figures of the project: plotting only, reading results through the public API (no numerics of their own)."""
