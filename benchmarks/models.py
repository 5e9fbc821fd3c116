"""Models for the benchmarks: they cost almost nothing, so the figures measure the plumbing, except the GPU
stand-ins of the batching workloads, whose cost is the point."""

from __future__ import annotations

import time

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


# A GPU stand-in for the batching benchmark: a call costs CALL_SECONDS plus STUDY_SECONDS per study. It
# sleeps rather than computes: while a GPU runs its kernels the host thread waits without holding the GIL or
# a core, which a sleep reproduces (a busy loop would model a CPU network and fight the bridge for cores).
CALL_SECONDS, STUDY_SECONDS = 0.040, 0.004


class FixedCostModel(Model):
    """One study per call: 44 ms each."""

    name = "fixed_cost"

    def infer(self, study: Study) -> Result:
        time.sleep(CALL_SECONDS + STUDY_SECONDS)
        return Result(study_ml_json={"instances": len(study.instances)})


class BatchedFixedCostModel(FixedCostModel):
    """Batches of up to 8: 40 ms + 4 ms per study (72 ms for 8)."""

    name = "fixed_cost_batched"
    max_batch_size = 8
    max_batch_delay = 0.005

    def infer_batch(self, studies: list[Study]) -> list[Result]:
        time.sleep(CALL_SECONDS + STUDY_SECONDS * len(studies))
        return [Result(study_ml_json={"instances": len(study.instances)}) for study in studies]


def onnx_body_one_by_one() -> Model:
    """example_models.onnx_body with batches of one: the same network, one study per session.run."""
    from example_models.onnx_body import OnnxBodyModel

    model = OnnxBodyModel()
    model.max_batch_size = 1
    return model
