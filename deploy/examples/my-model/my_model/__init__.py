"""An example model packaged into its own worker image (see ../Dockerfile and docs/deployment.md).

It boxes the brightest region of each series' middle image: small enough to read in a minute, real
enough to show where weights are loaded (`load`, before the worker reports SERVING) and how an answer
is built. Replace it with your own package; the image only needs WORKER_MODEL to name it.
"""

from __future__ import annotations

import numpy as np

from worker import BoundingBox, InvalidInput, Model, Result, Study


class BrightSpotModel(Model):
    name = "bright-spot"
    version = "1.0.0"
    commands = ("get-bounding-box-2d",)
    default_command = "get-bounding-box-2d"

    def load(self) -> None:
        # Load weights here (from a path inside the image, e.g. /app/weights): the worker stays
        # NOT_SERVING until this returns, and the startup probes allow for a long load.
        self.quantile = 0.9

    def infer(self, study: Study) -> Result:
        if not study.series:
            raise InvalidInput("send at least one DICOM image")
        boxes = []
        for series in study.series:
            instance = series.instances[len(series.instances) // 2]
            pixels = np.asarray(instance.dataset().pixel_array, dtype=np.float32)
            if pixels.ndim == 3:  # multi-frame: its first frame
                pixels = pixels[0]
            rows, columns = np.nonzero(pixels >= np.quantile(pixels, self.quantile))
            boxes.append(BoundingBox("bright spot", instance.sop_instance_uid,
                                     top_left=[int(columns.min()), int(rows.min())],
                                     bottom_right=[int(columns.max()), int(rows.max())],
                                     frame_number=1 if instance.frames > 1 else None))
        return Result(bounding_boxes=boxes)
