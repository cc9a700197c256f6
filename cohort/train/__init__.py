"""Training and evaluation: splits, Ray Train loops, metrics, evaluation tables."""
