"""What a handler written for the original Arterys SDK relied on and no longer gets, given back to it alone.

`LegacyHandlerModel` (and so a plain handler function given to `--model`) applies these; a typed `Model`
never sees them. Each one restores what the original SDK, its gateway or its test tool did:

1. `pydicom.read_file` / `pydicom.write_file`, removed in pydicom 3: aliases of `dcmread` / `dcmwrite`,
   added to the pydicom module when the handler's model loads. The first call logs a deprecation line.
2. Request JSON keys `depth`, `height`, `width`, each added only when absent, as the original test tool
   sent them with `-S`: depth = the number of DICOM instances in the request, height/width = Rows/Columns
   of the first instance (in request order) that has them.
3. A 3D mask part (its `binary_data_shape` has `depth` or `timepoints`) without `SeriesInstanceUID`: the
   study's series UID is filled in when the study has exactly one series. With several series nothing is
   guessed: a warning names the part, and the worker's check refuses the answer (HTTP 502).
4. No `inference_command` in the request: the command the worker resolved (the model's default) is added.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping

import pydicom

log = logging.getLogger("worker.legacy")

_warned: set[str] = set()


def install_pydicom_aliases() -> None:
    """Adds pydicom.read_file / write_file where pydicom no longer has them (idempotent)."""
    for old, new in (("read_file", "dcmread"), ("write_file", "dcmwrite")):
        if not hasattr(pydicom, old):
            setattr(pydicom, old, _deprecated_alias(old, getattr(pydicom, new)))


def _deprecated_alias(old: str, function):
    @functools.wraps(function)
    def alias(*args, **kwargs):
        if old not in _warned:  # once per process: a handler calls it for every instance
            _warned.add(old)
            log.warning("DeprecationWarning: pydicom.%s was removed in pydicom 3; the legacy-handler shim runs "
                        "pydicom.%s instead (call that in the handler to silence this)", old, function.__name__)
        return function(*args, **kwargs)

    alias.__name__ = old
    return alias


def legacy_request_json(request: Mapping, command: str, instances) -> dict:
    """The handler's `json_input`: the request's JSON plus shims 2 and 4; the study's own dict is not changed."""
    json_input = dict(request)
    if command and "inference_command" not in json_input:
        json_input["inference_command"] = command
    first = next((i for i in instances if i.rows and i.columns), None)
    json_input.setdefault("depth", len(instances))
    json_input.setdefault("height", first.rows if first else 0)
    json_input.setdefault("width", first.columns if first else 0)
    return json_input


def fill_series_uids(response_json, study):
    """Shim 3 on a copy of the handler's JSON (a handler may return a module-level dict)."""
    parts = response_json.get("parts") if isinstance(response_json, Mapping) else None
    if not isinstance(parts, list) or not any(_is_3d_without_series(part) for part in parts):
        return response_json
    series_uids = [series.uid for series in study.series]  # ordering the series costs: only when needed
    filled = []
    for index, part in enumerate(parts):
        if _is_3d_without_series(part):
            if len(series_uids) == 1 and series_uids[0]:
                part = {**part, "SeriesInstanceUID": series_uids[0]}
            else:
                log.warning("parts[%d] is a 3D mask without SeriesInstanceUID and the study has %d series: the "
                            "handler must name the series it covers (filled in only for a single-series study)",
                            index, len(series_uids))
        filled.append(part)
    return {**response_json, "parts": filled}


def _is_3d_without_series(part) -> bool:
    if not isinstance(part, Mapping) or part.get("SeriesInstanceUID"):
        return False
    shape = part.get("binary_data_shape")
    return isinstance(shape, Mapping) and ("depth" in shape or "timepoints" in shape)
