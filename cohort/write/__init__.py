"""Outputs people look at: preview images of series, with their landmarks and calcium."""
