"""Input checks the mock model reports as `dicomConformance` (shown to users as warnings).

Works on pydicom headers in slice order, so the typed model and the Arterys-style handler share it.
"""

from __future__ import annotations

import numpy as np


def conformance_checks(headers: list) -> list[dict]:
    """Enough images, evenly spaced slices, pixel spacing present."""
    frames = sum(int(h.get("NumberOfFrames", 1) or 1) for h in headers)
    even = True
    orientation = headers[0].get("ImageOrientationPatient")
    positions = [h.get("ImagePositionPatient") for h in headers]
    if orientation and all(positions) and len(headers) > 2:
        normal = np.cross([float(v) for v in orientation[:3]], [float(v) for v in orientation[3:]])
        steps = np.diff([float(np.dot(normal, [float(v) for v in p])) for p in positions])
        even = bool(np.allclose(steps, steps[0], atol=1e-3))
    return [
        {"description": "Series has at least 3 images", "compliant": frames >= 3},
        {"description": "Slices are evenly spaced", "compliant": even},
        {"description": "Pixel spacing is present", "compliant": "PixelSpacing" in headers[0]},
    ]
