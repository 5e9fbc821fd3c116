"""Models for the benchmarks: they cost almost nothing, so the figures measure the plumbing."""

from __future__ import annotations

import numpy as np

from worker import Mask, Model, Result, Study


class SizeModel(Model):
    """Answers with the study's size; with request option `"mask": true`, also a 3D probability mask over
    the first series (one byte per voxel: a 1 GiB study of 16-bit slices gives a 512 MiB mask)."""

    name = "size_model"

    def infer(self, study: Study) -> Result:
        parts = []
        if study.request.get("mask"):
            series = study.series[0]
            parts.append(Mask("bench", np.full(series.mask_shape()[1:], 200, dtype=np.uint8),
                              series_instance_uid=series.uid))
        total = sum(i.size for i in study.instances)
        return Result(parts=parts, study_ml_json={"bytes": total, "instances": len(study.instances)})
