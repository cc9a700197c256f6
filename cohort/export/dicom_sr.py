"""A DICOM SR (TID 1500 Measurement Report, Comprehensive 3D SR) of one series' numbers.

One measurement group (TID 1411, volumetric ROI) per segment, tied to its segment of the
SEG: the calcium volume (mm^3), the number of plaques, the peak CT number (HU) and, for
the petrous, cavernous and supraclinoid segments, the landmark at their proximal boundary
(carotid canal, petrolingual ligament, anterior clinoid: acquired slice and z in mm, as in
the series table). One group (TID 1501) for the series: the total volume and the risk
group. The device observer and every group's algorithm identification name the landmark
model, its checksum, what it was trained on, and where the calcium mask came from.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes as dcodes

from cohort.anatomy import SEGMENT_KINDS, SEGMENT_LABELS, SIDES
from cohort.errors import ConfigError
from cohort.export import codes
from cohort.export.provenance import Provenance

logger = logging.getLogger(__name__)

SR_SERIES_NUMBER = 9020


@dataclass(frozen=True)
class SeriesNumbers:
    """The numbers of one series the SR reports, as the series table has them."""

    volume_mm3: dict[str, float]  # per segment (`cohort.anatomy.SEGMENTS`)
    plaques: dict[str, int]
    peak_hu: dict[str, float | None]  # None: no calcium in the segment
    total_mm3: float
    risk_group: str | None
    landmark_slice: dict[str, int]  # per landmark (`cohort.anatomy.LANDMARKS`), native
    landmark_z_mm: dict[str, float]

    @classmethod
    def from_row(cls, row: dict) -> SeriesNumbers:
        """From a finished row of the series table.

        Raises:
            ConfigError: the row has no volumes (landmarks only) or lacks a landmark.
        """
        from cohort.anatomy import LANDMARKS, SEGMENTS

        missing = [f"{n}_mm3" for n in SEGMENTS if row.get(f"{n}_mm3") is None] + \
            [f"{n}_slice" for n in LANDMARKS if row.get(f"{n}_slice") is None]
        if missing or row.get("total_calcium_mm3") is None:
            raise ConfigError(f"series {row.get('series_key')}: no SR without volumes and "
                              f"landmarks; missing {', '.join(missing) or 'total_calcium_mm3'}")
        return cls(
            volume_mm3={n: float(row[f"{n}_mm3"]) for n in SEGMENTS},
            plaques={n: int(row.get(f"{n}_plaques") or 0) for n in SEGMENTS},
            peak_hu={n: _number(row.get(f"{n}_peak_hu")) for n in SEGMENTS},
            total_mm3=float(row["total_calcium_mm3"]), risk_group=row.get("risk_group"),
            landmark_slice={n: int(row[f"{n}_slice"]) for n in LANDMARKS},
            landmark_z_mm={n: float(row[f"{n}_z_mm"]) for n in LANDMARKS})


def _number(v) -> float | None:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def algorithm_id(prov: Provenance) -> hd.sr.AlgorithmIdentification:
    return hd.sr.AlgorithmIdentification(
        name=f"cohort {prov.model_name}"[:64],
        version=f"{prov.model_checksum} code {prov.code_version}"[:64],
        parameters=[f"trained on {prov.model_trained_on}"[:64],
                    f"calcium mask {prov.mask_source}"[:64]]
        + (["SYNTHETIC: not for clinical use"] if prov.synthetic else []))


def _segment_group(seg: Dataset, side: str, kind: str, numbers: SeriesNumbers,
                   prov: Provenance, series_uid: str):
    name = f"{side}_{kind}"
    alg = algorithm_id(prov)
    measurements = [
        hd.sr.Measurement(name=codes.CALCIUM_VOLUME, value=numbers.volume_mm3[name],
                          unit=codes.MM3, algorithm_id=alg),
        hd.sr.Measurement(name=codes.PLAQUE_COUNT, value=numbers.plaques[name],
                          unit=codes.NO_UNITS, algorithm_id=alg),
    ]
    if numbers.peak_hu[name] is not None:
        measurements.append(hd.sr.Measurement(
            name=codes.PEAK_HU, value=numbers.peak_hu[name], unit=codes.HU,
            derivation=codes.MAXIMUM, algorithm_id=alg))
    landmark = codes.BOUNDARY_LANDMARK[kind]
    if landmark is not None:
        full = f"{side}_{landmark}"
        measurements += [
            hd.sr.Measurement(name=codes.landmark_slice(landmark),
                              value=numbers.landmark_slice[full], unit=codes.NO_UNITS,
                              algorithm_id=alg),
            hd.sr.Measurement(name=codes.landmark_z(landmark),
                              value=numbers.landmark_z_mm[full], unit=codes.MM,
                              algorithm_id=alg)]
    return hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=prov.uid("tracking", name), identifier=name),
        # the segment of the SEG, and the source series it was made from (a segment
        # without calcium has no frames to cite)
        referenced_segment=hd.sr.ReferencedSegment(
            sop_class_uid=seg.SOPClassUID, sop_instance_uid=seg.SOPInstanceUID,
            segment_number=SEGMENT_LABELS[name],
            source_series=hd.sr.SourceSeriesForSegmentation(series_uid)),
        finding_type=codes.CALCIFICATION,
        finding_sites=[hd.sr.FindingSite(anatomic_location=codes.SEGMENT_REGION[kind],
                                         laterality=codes.LATERALITY[side])],
        algorithm_id=alg, measurements=measurements)


def _series_group(numbers: SeriesNumbers, prov: Provenance, series_uid: str):
    alg = algorithm_id(prov)
    evaluations = None
    if numbers.risk_group:
        evaluations = [hd.sr.QualitativeEvaluation(name=codes.RISK_GROUP,
                                                   value=codes.risk_group(numbers.risk_group))]
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=prov.uid(series_uid, "total"),
                                                     identifier="total"),
        finding_type=codes.CALCIFICATION,
        finding_sites=[hd.sr.FindingSite(anatomic_location=codes.INTERNAL_CAROTID_ARTERY,
                                         laterality=codes.BILATERAL)],
        algorithm_id=alg,
        measurements=[hd.sr.Measurement(name=codes.CALCIUM_VOLUME, value=numbers.total_mm3,
                                        unit=codes.MM3, algorithm_id=alg)],
        qualitative_evaluations=evaluations)


def build_sr(seg: Dataset, headers: list[Dataset], numbers: SeriesNumbers, prov: Provenance,
             series_uid: str) -> hd.sr.Comprehensive3DSR:
    """The SR of one series (see module).

    Args:
        seg: the series' SEG (`cohort.export.dicom_seg.build_seg`), which the groups cite.
        headers: the de-identified source headers the SEG references (the SR's evidence).
        numbers: the series table's numbers.
        prov: the models behind them.
        series_uid: the source SeriesInstanceUID (fixes the SR's UIDs).
    """
    observer = hd.sr.ObserverContext(
        observer_type=dcodes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=prov.uid(prov.model_sha256, "device"),
            name=f"cohort {prov.model_name}"[:64],
            manufacturer_name="cohort",
            model_name=f"{prov.model_name} {prov.model_checksum}"[:64],
            serial_number=prov.model_checksum))
    groups = [_segment_group(seg, side, kind, numbers, prov, series_uid)
              for side in SIDES for kind in SEGMENT_KINDS]
    groups.append(_series_group(numbers, prov, series_uid))
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=dcodes.LN.CTUnspecifiedBodyRegion,
        imaging_measurements=groups,
        title=dcodes.DCM.ImagingMeasurementReport)
    sr = hd.sr.Comprehensive3DSR(
        evidence=[seg, *headers], content=report[0],
        series_instance_uid=prov.uid(series_uid, "sr-series"), series_number=SR_SERIES_NUMBER,
        sop_instance_uid=prov.uid(series_uid, "sr"), instance_number=1,
        manufacturer="cohort", is_complete=True, is_final=False, is_verified=False)
    sr.SeriesDescription = prov.description("ICA calcium SR")
    scheme = Dataset()  # the private codes' scheme, declared (PS3.3 C.12.1.1.4)
    scheme.CodingSchemeDesignator = codes.PRIVATE_SCHEME
    scheme.CodingSchemeName = "cohort private codes (landmarks, risk groups)"
    scheme.CodingSchemeResponsibleOrganization = "cohort"
    sr.CodingSchemeIdentificationSequence = [scheme]
    return sr
