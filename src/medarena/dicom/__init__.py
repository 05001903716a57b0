"""DICOM foundations: de-identification (deid) and other DICOM helpers."""
