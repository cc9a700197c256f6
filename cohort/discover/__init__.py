"""Discovery: list an archive, read DICOM headers from byte ranges, group files into series,
select the series to analyse per study, and publish the manifest (`cohort index`).

Modules, in the order the data flows: `listing` (objects under a URL), `ranged` (a file
over byte ranges), `headers` (one header -> a row or an error code), `parallel` (Ray tasks
with per-item isolation), `grouping` (series -> stacks), `series` (type rules and
geometry), `selection` (per-study choice), `manifest` (the Parquet tables), `index` (the
whole job).
"""

from cohort.discover.index import IndexResult, ScanStats, build_index, index_cohort, summarize

__all__ = ["IndexResult", "ScanStats", "build_index", "index_cohort", "summarize"]
