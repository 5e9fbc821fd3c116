"""A segmentation network on ONNX Runtime, batched across studies: the body (what is not air) on CT images.

`python -m worker --model example_models.onnx_body`, with this example's own pins installed
(`pip install -r example_models/onnx_body/requirements.txt`; `make setup` does it in a checkout). The network
(graph.py) is built at load time with the `onnx` package and runs on the CUDA provider when onnxruntime
has it, on the CPU otherwise.

It defines `infer_batch`, so the worker hands it the studies waiting together (worker/serving/batching.py): the
images of every study in the batch go through the network together, RUN_IMAGES per `session.run`, grouped
by image size. Pixels are read as in example_models.hounsfield (pydicom with the pylibjpeg decoders, the
rescale to Hounsfield units), one frame at a time. Each study's answer is a probability mask per CT series
("body", 3D over the series) and the mean body fraction per series and study. A study that fails (no
instance: InvalidInput; no CT series, a transfer syntax no decoder reads: UnsupportedStudy; a damaged file)
gets its exception in its place in the returned list, and the other studies of the batch their answers.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from example_models.hounsfield import decoded_frames, hounsfield, is_ct
from example_models.onnx_body.graph import FRACTION, INPUT, PROBABILITY, build_graph, open_session
from worker import Instance, InvalidInput, Mask, Model, Result, Series, Study, UnsupportedStudy

RUN_IMAGES = 16  # images per session.run: a batch large enough for a GPU, small enough for its memory


@dataclass(eq=False)
class _SeriesWork:
    """One CT series of one study of the batch, and the probability mask it gets."""

    slot: int  # the study's place in the batch
    series: Series
    mask: np.ndarray  # uint8 (timepoints, depth, rows, columns)
    fractions: list[float]

    def planes(self):
        """(plane index in the mask, instance, frame index) in the series' order, as the mask lays them out."""
        plane = 0
        for instance in self.series.instances:
            for frame in range(instance.frames):
                yield plane, instance, frame
                plane += 1


class OnnxBodyModel(Model):
    name = "onnx-body"
    version = "1.0"
    commands = ("segment-body",)
    default_command = "segment-body"
    max_batch_size = 8
    max_batch_delay = 0.005

    def load(self) -> None:
        # Your exported network instead: open_session("/app/weights/model.onnx") (docs/model-authors.md).
        self.session = open_session(build_graph())
        self.provider = self.session.get_providers()[0]

    def infer_batch(self, studies: list[Study]) -> list[Result | Exception]:
        answers: list[Result | Exception | None] = [None] * len(studies)
        work: list[_SeriesWork] = []
        for slot, study in enumerate(studies):
            try:  # mask_shape() raises InvalidInput for a series that mixes image sizes
                work += [_SeriesWork(slot, series, np.zeros(series.mask_shape(), dtype=np.uint8), [])
                         for series in ct_series(study)]
            except Exception as error:  # this study's problem alone: it fails, the others go on
                answers[slot] = error
        by_size = defaultdict(list)
        for item in work:
            by_size[(item.series.rows, item.series.columns)].append(item)
        for items in by_size.values():
            self.segment(items, studies, answers)
        return [answer if answer is not None else self.result(study, [w for w in work if w.slot == slot])
                for slot, (study, answer) in enumerate(zip(studies, answers, strict=True))]

    def segment(self, items: list[_SeriesWork], studies: list[Study], answers: list) -> None:
        """Runs the network over the planes of same-sized series, RUN_IMAGES at a time, decoding each frame
        just before its run; a study whose pixels cannot be read gets the error and loses its later planes."""
        planes = [(item, *plane) for item in items for plane in item.planes()]
        frames: dict[Instance, object] = {}  # each instance's frame iterator, read in order
        for start in range(0, len(planes), RUN_IMAGES):
            chunk, images = [], []
            for item, plane, instance, index in planes[start:start + RUN_IMAGES]:
                if answers[item.slot] is not None or studies[item.slot].is_cancelled():
                    continue  # failed already, or nobody waits for the answer any more
                try:
                    frame = next(frames.setdefault(instance, decoded_frames(instance)))
                    if frame.shape != (item.series.rows, item.series.columns):
                        raise UnsupportedStudy(f"{instance.label} has frames of {frame.shape}, "
                                               f"not the {item.series.rows} x {item.series.columns} of its header")
                    images.append(hounsfield(frame, instance.header, index))
                except Exception as error:
                    answers[item.slot] = error
                    continue
                chunk.append((item, plane))
            if not chunk:
                continue
            outputs = self.session.run([PROBABILITY, FRACTION], {INPUT: np.stack(images)[:, np.newaxis]})
            for (item, plane), probability, fraction in zip(chunk, *outputs, strict=True):
                item.mask.reshape(-1, *probability.shape[1:])[plane] = np.round(probability[0] * 255)
                item.fractions.append(float(fraction))

    def result(self, study: Study, work: list[_SeriesWork]) -> Result:
        if study.is_cancelled():
            return Result()  # nobody waits for the answer any more
        fractions = {item.series.uid: round(float(np.mean(item.fractions)), 4) for item in work}
        return Result(
            parts=[Mask("body", item.mask[0] if item.series.timepoints == 1 else item.mask, "probability_mask",
                        series_instance_uid=item.series.uid, probability_threshold=0.5) for item in work],
            study_ml_json={"body_fraction": round(float(np.mean([f for item in work for f in item.fractions])), 4),
                           "execution_provider": self.provider,
                           "skipped_series": [s.uid for s in study.series if s.uid not in fractions]},
            series_ml_json={uid: {"body_fraction": fraction} for uid, fraction in fractions.items()},
        )


def ct_series(study: Study) -> list[Series]:
    if not study.instances:
        raise InvalidInput("the request holds no DICOM instance; send a CT image or series")
    series = [s for s in study.series if is_ct(s)]
    if not series:
        raise UnsupportedStudy("no CT series in the study: this network reads Hounsfield units")
    return series
