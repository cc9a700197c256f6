"""The inference job's stages: per-series CPU preparation, the DST actor, quantification."""
