"""Preprocessing of a read `Volume` before inference: hemisphere separation."""
