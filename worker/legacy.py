"""Runs an unchanged Arterys-style handler: `handler(json_input, dicom_instances, input_hash) -> (json, buffers)`.

The original gateway passed every part after the JSON part, attachments first, as `io.BytesIO` objects,
and sent back `json` plus one buffer per entry of `json["parts"]`. The adapter does the same, so a
handler ported from the original SDK runs as it was; its answer then goes through the same checks as
a typed `Result`. What the original SDK gave a handler and pydicom 3 or this protocol no longer do
(`pydicom.read_file`, `depth`/`height`/`width` in the request, a 3D mask's series) is given back by the
shims of worker/legacy_shims.py, to legacy handlers only.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence

from worker import legacy_shims
from worker.api import Model
from worker.study import Study

Handler = Callable[[dict, list, str], tuple]


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
        return legacy_shims.fill_series_uids(response_json, study), buffers
