"""SOP classes the de-identifier accepts, quarantines or rejects.

Only image/RT storage classes whose non-pixel content Table E.1-1 covers and whose
pixels rarely carry burned-in text are on the known-safe list. Classes that often
carry burned-in text (secondary and screen captures, ultrasound) are quarantined:
v1 has no pixel-cleaning rules, so nothing would remove that text. Everything
else (SR, presentation states, video, waveforms, unknown private classes) is
rejected unless the caller allows unknown classes explicitly.
"""

from __future__ import annotations

_P = "1.2.840.10008.5.1.4.1.1."

KNOWN_SAFE_SOP_CLASSES: dict[str, str] = {
    _P + "1": "Computed Radiography Image Storage",
    _P + "1.1": "Digital X-Ray Image Storage - For Presentation",
    _P + "1.1.1": "Digital X-Ray Image Storage - For Processing",
    _P + "1.2": "Digital Mammography X-Ray Image Storage - For Presentation",
    _P + "1.2.1": "Digital Mammography X-Ray Image Storage - For Processing",
    _P + "2": "CT Image Storage",
    _P + "2.1": "Enhanced CT Image Storage",
    _P + "2.2": "Legacy Converted Enhanced CT Image Storage",
    _P + "4": "MR Image Storage",
    _P + "4.1": "Enhanced MR Image Storage",
    _P + "4.3": "Enhanced MR Color Image Storage",
    _P + "4.4": "Legacy Converted Enhanced MR Image Storage",
    _P + "13.1.3": "Breast Tomosynthesis Image Storage",
    _P + "20": "Nuclear Medicine Image Storage",
    _P + "66.4": "Segmentation Storage",
    _P + "128": "Positron Emission Tomography Image Storage",
    _P + "128.1": "Legacy Converted Enhanced PET Image Storage",
    _P + "130": "Enhanced PET Image Storage",
    _P + "481.1": "RT Image Storage",
    _P + "481.2": "RT Dose Storage",
    _P + "481.3": "RT Structure Set Storage",
    _P + "481.5": "RT Plan Storage",
    _P + "481.8": "RT Ion Plan Storage",
}

BURNED_IN_SOP_CLASSES: dict[str, str] = {
    _P + "7": "Secondary Capture Image Storage",
    _P + "7.1": "Multi-frame Single Bit Secondary Capture Image Storage",
    _P + "7.2": "Multi-frame Grayscale Byte Secondary Capture Image Storage",
    _P + "7.3": "Multi-frame Grayscale Word Secondary Capture Image Storage",
    _P + "7.4": "Multi-frame True Color Secondary Capture Image Storage",
    _P + "6": "Ultrasound Image Storage (Retired)",
    _P + "6.1": "Ultrasound Image Storage",
    _P + "6.2": "Enhanced US Volume Storage",
    _P + "3": "Ultrasound Multi-frame Image Storage (Retired)",
    _P + "3.1": "Ultrasound Multi-frame Image Storage",
    _P + "77.1.1.1": "Video Endoscopic Image Storage",
    _P + "77.1.4.1": "Video Photographic Image Storage",
}

DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"
