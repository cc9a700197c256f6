"""The main job on its embedded default: a local folder, a local Ray, a synthetic cohort.

1. `cohort synth heads`: a synthetic head-CT cohort as DICOM, with masks and ground truth;
2. `cohort index`: discovery, validation and selection -> manifest.parquet;
3. `cohort run`: Ray Data streams every selected series through reading, hemisphere
   separation, the shipped DST checkpoint, the shipped calcium segmenter (both trained on
   synthetic phantoms; the cohort's own masks instead with ``masks=True``) and
   quantification -> series / landmarks / segments tables;
4. DuckDB reads the tables back: volumes by risk group, the model's landmarks against the
   generator's ground truth, overall and by acquisition (`cohort.agreement`), and the
   segmenter's calcium against the true calcium (`cohort.calcium_agreement`);
5. `cohort report`: the HTML report of the run (`results/report/index.html`), SYNTHETIC.
"""

from __future__ import annotations

import logging
import os
import shutil
import time

from cohort.agreement import agreement_by_acquisition, landmark_errors, summarise, to_markdown
from cohort.calcium_agreement import agreement, calcium_rows
from cohort.discover.index import index_cohort, summarize
from cohort.pipeline import RunConfig, run_cohort
from cohort.query import connect
from cohort.report import ReportConfig, write_report
from cohort.storage import StorageOptions
from cohort.synth.config import SynthConfig
from cohort.synth.heads import generate_cohort
from cohort.synth.summary import describe_cohort
from cohort.train.tables import to_markdown as to_table
from cohort.write.identity import IdentityConfig

logger = logging.getLogger(__name__)


def run_demo(*, out_dir: str = "demo-output", patients: int = 12, seed: int = 0,
             matrix: int = 512, workers: int = 0, masks: bool = False) -> str:
    """Run the demo; return the report to print."""
    out_dir = os.path.abspath(out_dir)
    cohort_dir = os.path.join(out_dir, "synthetic-cohort")
    index_dir = os.path.join(out_dir, "index")
    results_dir = os.path.join(out_dir, "results")
    cfg = SynthConfig(patients=patients, seed=seed, matrix=matrix, workers=workers,
                      localizer_p=0.3, second_series_p=0.3, tilt_p=0.15, followup_p=0.2)
    # the cohort is generated afresh, so the index and results of an earlier demo in the
    # same folder (its own scans, or another seed's) go too: a second `./run demo` runs the
    # job again instead of finding nothing to do
    earlier = os.path.isdir(cohort_dir)  # only a folder an earlier demo made
    for stale in (index_dir, results_dir):
        if earlier and os.path.isdir(stale):
            logger.info("removing the earlier demo's %s", stale)
            shutil.rmtree(stale)
    t0 = time.perf_counter()
    table = generate_cohort(cfg, cohort_dir, StorageOptions(), overwrite=True)
    report = ["[1/3] " + describe_cohort(table, cohort_dir, time.perf_counter() - t0), ""]
    t1 = time.perf_counter()
    index = index_cohort(os.path.join(cohort_dir, "dicom"), index_dir)
    report += ["[2/3] " + summarize(index), f"      ({time.perf_counter() - t1:.1f} s)", ""]
    config = RunConfig(masks=os.path.join(cohort_dir, "masks") if masks else None,
                       write_masks=not masks, identity=IdentityConfig(salt="synthetic-demo"))
    run = run_cohort(index_dir, results_dir, config)
    report.append("[3/3] cohort run: " + run.line())
    trained_on = run.manifest["model"]["trained_on"]
    calcium = ("the cohort's own masks" if masks else
               f"shipped segmenter {run.manifest['segmenter']['name']}, trained on "
               f"{run.manifest['segmenter']['trained_on']}")
    report.append(f"      model: shipped checkpoint, trained on {trained_on}; calcium: "
                  f"{calcium} (not for clinical use); data: SYNTHETIC")
    con = connect(results_dir)
    report.append("\nSegment volumes by risk group (mean mm^3, SYNTHETIC), read back with DuckDB:")
    report.append(str(con.sql("""
        SELECT risk_group, count(*) AS series, round(avg(total_calcium_mm3), 1) AS total,
               round(avg(right_cavernous_mm3 + left_cavernous_mm3), 1) AS cavernous,
               round(avg(right_supraclinoid_mm3 + left_supraclinoid_mm3), 1) AS supraclinoid,
               round(avg(right_petrous_mm3 + left_petrous_mm3), 1) AS petrous,
               round(avg(right_cervical_mm3 + left_cervical_mm3), 1) AS cervical,
               sum(CASE WHEN tilt_corrected THEN 1 ELSE 0 END) AS tilt_corrected
        FROM series WHERE status = 'ok' GROUP BY risk_group ORDER BY total""")))
    series = con.sql("SELECT * FROM series").to_arrow_table().to_pandas()
    errors = landmark_errors(series, table.to_pandas())
    overall = summarise(errors)
    report.append(f"Model landmarks against the generator's ground truth (SYNTHETIC): MAE "
                  f"{overall['mae_slices']:.2f} slices ({overall['mae_mm']:.2f} mm), "
                  f"{100 * overall['acc_tau1']:.0f}% within one slice, "
                  f"{100 * overall['top1']:.0f}% on the true slice, over "
                  f"{overall['series']} series x 6 landmarks")
    report.append(to_markdown(agreement_by_acquisition(errors), synthetic=True))
    if not masks:
        rows = calcium_rows(series, table.to_pandas(), output_url=results_dir,
                            truth_root=cohort_dir)
        report.append(to_table(agreement(rows), "Segmenter calcium against the generator's "
                               "ground truth", True))
    failed = series[series["status"] == "error"]
    if len(failed):
        report.append(f"failed series: {failed['error_code'].value_counts().to_dict()}")
    report.append(f"\nResults: {results_dir} (query them: cohort query {results_dir} "
                  "\"SELECT status, count(*) FROM series GROUP BY ALL\")")
    page = write_report(results_dir, config=ReportConfig(synthetic_data=True))
    report.append(f"Report (SYNTHETIC): {page} (open it in a browser; `cohort report "
                  f"{results_dir}` redraws it)")
    return "\n".join(report)
