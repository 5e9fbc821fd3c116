"""The example's network, built here with the `onnx` helper API (nothing downloaded), and its session.

The graph is what a PyTorch export of a small segmentation network looks like from the outside: one input
`image` of shape (batch, 1, height, width), float32 Hounsfield units, and two outputs, the per-pixel
probability `body` (batch, 1, height, width) and its mean per image, `body_fraction` (batch). Inside: edge
padding, a 3 x 3 mean filter (a convolution with fixed weights), and a sigmoid of the distance to -500 HU
(between air, -1000, and soft tissue, 0 to 100): a pixel is "body" when its neighbourhood is denser than
air. Height and width are free, the batch dimension too, so one session serves any batch of same-sized images.

To run your own network instead, export it with a dynamic batch axis and open its file in `open_session`
(docs/model-authors.md, "A model on ONNX Runtime").
"""

from __future__ import annotations

import logging

import numpy as np
import onnx
import onnxruntime
from onnx import TensorProto, helper, numpy_helper

log = logging.getLogger(__name__)

INPUT, PROBABILITY, FRACTION = "image", "body", "body_fraction"
OPSET = 21  # with IR version 10 (ONNX 1.16); ReduceMean takes its axes as an input from opset 18 on
BODY_HU = -500.0  # the probability is 0.5 here
HU_PER_LOGIT = 20.0  # 100 HU above -500 gives a logit of 5 (p = 0.993)
CUDA, CPU = "CUDAExecutionProvider", "CPUExecutionProvider"


def build_graph() -> onnx.ModelProto:
    """The network as an ONNX model, checked by onnx's own checker."""
    image = helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["batch", 1, "height", "width"])
    body = helper.make_tensor_value_info(PROBABILITY, TensorProto.FLOAT, ["batch", 1, "height", "width"])
    fraction = helper.make_tensor_value_info(FRACTION, TensorProto.FLOAT, ["batch"])
    weights = [
        numpy_helper.from_array(np.full((1, 1, 3, 3), 1 / 9, dtype=np.float32), "mean_kernel"),
        numpy_helper.from_array(np.array([0, 0, 1, 1, 0, 0, 1, 1], dtype=np.int64), "pads"),  # 1 pixel on H, W
        numpy_helper.from_array(np.array(BODY_HU, dtype=np.float32), "body_hu"),
        numpy_helper.from_array(np.array(HU_PER_LOGIT, dtype=np.float32), "hu_per_logit"),
        numpy_helper.from_array(np.array([1, 2, 3], dtype=np.int64), "image_axes"),
    ]
    nodes = [
        helper.make_node("Pad", [INPUT, "pads"], ["padded"], mode="edge"),  # the border repeats, not 0 HU
        helper.make_node("Conv", ["padded", "mean_kernel"], ["smoothed"]),
        helper.make_node("Sub", ["smoothed", "body_hu"], ["above_air"]),
        helper.make_node("Div", ["above_air", "hu_per_logit"], ["logits"]),
        helper.make_node("Sigmoid", ["logits"], [PROBABILITY]),
        helper.make_node("ReduceMean", [PROBABILITY, "image_axes"], [FRACTION], keepdims=0),
    ]
    graph = helper.make_graph(nodes, "body-segmentation", [image], [body, fraction], weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=10,
                              producer_name="example_models.onnx_body")
    onnx.checker.check_model(model, full_check=True)
    return model


def providers() -> list[str]:
    """CUDA when this onnxruntime build has it (the onnxruntime-gpu package), the CPU otherwise."""
    return [CUDA, CPU] if CUDA in onnxruntime.get_available_providers() else [CPU]


def open_session(model: onnx.ModelProto | str) -> onnxruntime.InferenceSession:
    """A session on the best provider there is, for a model in memory or the path of an .onnx file.

    ONNX Runtime falls back to the CPU, with a warning of its own, when the CUDA provider is there but cannot
    start (no GPU visible, a driver too old): `session.get_providers()` says what it really uses."""
    wanted = providers()
    if CUDA in wanted:
        onnxruntime.preload_dlls()  # the CUDA and cuDNN libraries of the nvidia-* pip packages, when installed
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else model
    session = onnxruntime.InferenceSession(source, providers=wanted)
    log.info("ONNX Runtime %s on %s (available: %s)", onnxruntime.__version__, session.get_providers()[0],
             ", ".join(onnxruntime.get_available_providers()))
    return session
