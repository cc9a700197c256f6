"""`cohort report`: one HTML page (with its PNG figures) that draws a cohort from the
published tables of `cohort run`: the study flow from archive objects to series measured,
calcium by segment and side, risk groups, change over time, landmark confidence, the QC
gallery and the runs' provenance, marked SYNTHETIC where the models or images are.

    gather (data, attrition) -> figures (matplotlib, Agg) -> html -> build.write_report
"""

from cohort.report.build import write_report
from cohort.report.config import ReportConfig

__all__ = ["ReportConfig", "write_report"]
