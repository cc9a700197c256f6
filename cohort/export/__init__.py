"""DICOM exports of a run's results: a SEG of the calcium by segment and a TID 1500 SR of the
numbers per series (highdicom), and pushing them to a DICOMweb server (STOW-RS)."""
