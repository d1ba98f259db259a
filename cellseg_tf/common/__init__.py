"""Shared helpers every stage may use: atomic file writing, figures."""
