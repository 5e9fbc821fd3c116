"""Input checks the mock model reports as `dicomConformance` (shown to users as warnings).

Works on pydicom headers in slice order, so the typed model and the Arterys-style handler share it.
"""

from __future__ import annotations

import numpy as np

from dicom_geometry import plane_normal


def conformance_checks(headers: list) -> list[dict]:
    """Enough images, evenly spaced slices, pixel spacing present."""
    frames = sum(int(h.get("NumberOfFrames", 1) or 1) for h in headers)
    even = True
    normal = plane_normal(headers[0].get("ImageOrientationPatient"))
    positions = [h.get("ImagePositionPatient") for h in headers]
    if normal is not None and all(positions) and len(headers) > 2:
        steps = np.diff([float(np.dot(normal, [float(v) for v in p])) for p in positions])
        even = bool(np.allclose(steps, steps[0], atol=1e-3))
    return [
        {"description": "Series has at least 3 images", "compliant": frames >= 3},
        {"description": "Slices are evenly spaced", "compliant": even},
        {"description": "Pixel spacing is present", "compliant": "PixelSpacing" in headers[0]},
    ]
