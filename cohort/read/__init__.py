"""Reading series: DICOM / NIfTI decoding, geometry checks and tilt correction -> Volume."""
