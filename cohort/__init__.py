"""cohort: segment-specific intracranial carotid calcification on head CT cohorts."""

__version__ = "0.1.0"
