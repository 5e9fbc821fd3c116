"""Runs an unchanged Arterys-style handler: `handler(json_input, dicom_instances, input_hash) -> (json, buffers)`.

The original gateway passed every part after the JSON part, attachments first, as `io.BytesIO` objects,
and sent back `json` plus one buffer per entry of `json["parts"]`. The adapter does the same, so a
handler ported from the original SDK runs as it was; its answer then goes through the same checks as
a typed `Result`. What the original SDK gave a handler and pydicom 3 or this protocol no longer do
(`pydicom.read_file`, `depth`/`height`/`width` in the request, a 3D mask's series) is given back by the
shims of worker/sdk/legacy_shims.py, to legacy handlers only.
"""

from __future__ import annotations

import io
import logging
import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from worker.sdk import legacy_shims, mask_axes
from worker.sdk.model import Model
from worker.sdk.study import Study

Handler = Callable[[dict, list, str], tuple]
log = logging.getLogger("worker.legacy")


class LegacyHandlerModel(Model):
    """Wraps a handler function as a Model.

    Args:
        handler: the Arterys-style handler.
        name, commands, default_command: as on `Model`.
        load: optional function called once before the worker reports SERVING (load weights here).
        attachments_first: pass attachments before the instances in `dicom_instances`, as the original
            gateway did (default). False passes only the DICOM instances.
    """

    # The handler gets every instance as an in-memory buffer: spooling to disk would only add a copy.
    study_in_memory = True

    def __init__(
        self,
        handler: Handler,
        *,
        name: str = "",
        commands: Sequence[str] = (),
        default_command: str = "",
        load: Callable[[], None] | None = None,
        attachments_first: bool = True,
    ) -> None:
        self.handler = handler
        self.name = name or getattr(handler, "__name__", "legacy-handler")
        self.commands = tuple(commands)
        self.default_command = default_command
        self._load = load
        self.attachments_first = attachments_first

    def load(self) -> None:
        legacy_shims.install_pydicom_aliases()  # before the author's load, which may read a DICOM template
        if self._load is not None:
            self._load()

    def infer(self, study: Study):
        parts = (list(study.attachments) if self.attachments_first else []) + list(study.instances)
        dicom_instances = [io.BytesIO(part.read_bytes()) for part in parts]
        json_input = legacy_shims.legacy_request_json(study.request, study.command, study.instances)
        answer = self.handler(json_input, dicom_instances, study.input_hash)
        if not isinstance(answer, (tuple, list)) or len(answer) != 2:
            return answer  # not a pair: the worker's check says so
        response_json, buffers = answer  # the original gateway unpacked any pair, a list too
        warn_about_mask_layouts(response_json, buffers)
        return legacy_shims.fill_series_uids(response_json, study), buffers


def warn_about_mask_layouts(response_json, buffers) -> None:
    """A numpy mask whose shape is not its own binary_data_shape's but has as many voxels goes out as the
    original gateway sent it (its bytes in the array's own order, `tostring()`), which a viewer draws
    scrambled: one WARNING per such mask names its axes and the call that orders them."""
    parts = response_json.get("parts") if isinstance(response_json, Mapping) else None
    if not isinstance(parts, list) or not isinstance(buffers, (list, tuple)):
        return
    for index, (part, buffer) in enumerate(zip(parts, buffers, strict=False)):
        shape = part.get("binary_data_shape") if isinstance(part, Mapping) else None
        if not isinstance(buffer, np.ndarray) or not isinstance(shape, Mapping):
            continue
        try:
            expected = ({"depth": int(shape["depth"]), "rows": int(shape["height"]), "cols": int(shape["width"])}
                        if "depth" in shape else {"rows": int(shape["height"]), "cols": int(shape["width"])})
            timepoints = int(shape.get("timepoints", 1))
        except (KeyError, TypeError, ValueError):
            continue  # the worker's check names a broken binary_data_shape
        array_shape = tuple(buffer.shape)
        logical = tuple(expected.values())
        if timepoints > 1 or buffer.size != math.prod(logical) or array_shape in (logical, (1, *logical)):
            continue
        how = mask_axes.explain(array_shape, expected)
        log.warning("parts[%d] (%r): the handler's mask array is %s but its binary_data_shape says (%s) = %s: its "
                    "bytes are sent in the array's own order, as the original gateway sent them, and the viewer "
                    "will draw them scrambled%s", index, part.get("label"), array_shape, ", ".join(expected),
                    logical, f"; {how}" if how else "")
