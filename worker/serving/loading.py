"""Finds the model a worker hosts from `--model`: `package.module:Name`, or a package exposing one model.

Modules are looked up first in the model directory (`--model-dir`, by default the current directory, as
uvicorn and gunicorn do), then among the installed packages, so that a model package next to the shell
needs no PYTHONPATH even when the worker runs as the installed `arterys-worker` command.

`Name` may be a `Model` instance, a `Model` class or a factory (both called without arguments), or a plain
Arterys-style handler function `handler(json_input, dicom_instances, input_hash)`, hosted as a
`LegacyHandlerModel`. Whatever goes wrong becomes one `ModelNotFound` line naming the spec and what was
tried; the traceback of an error raised by the model's own code goes to the log at DEBUG.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import os
import sys
import traceback
from pathlib import Path

from worker.sdk import legacy_shims
from worker.sdk.legacy import LegacyHandlerModel
from worker.sdk.model import Model
from worker.serving import porting_hints
from worker.serving.model_logging import worker_logging_kept

log = logging.getLogger("worker")

TRACEBACK_HINT = "LOG_LEVEL=DEBUG logs the traceback"


class ModelNotFound(Exception):
    pass


def use_model_dir(model_dir: str | os.PathLike) -> Path:
    """Puts the model directory first on sys.path (once), as `python -m` does for the current directory."""
    path = Path(model_dir).resolve()
    if not path.is_dir():
        raise ModelNotFound(f"--model-dir {str(model_dir)!r} is not a folder")
    if str(path) in sys.path:
        sys.path.remove(str(path))
    sys.path.insert(0, str(path))
    return path


def load_model_object(spec: str, model_dir: str | os.PathLike | None = None) -> Model:
    """Imports `spec` and returns a Model. `model_dir` (when given) is searched before the installed packages."""
    searched = use_model_dir(model_dir) if model_dir is not None else None
    module_name, _, attribute = spec.partition(":")
    try:
        module, shimmed = import_model_module(spec, module_name, searched), False
    except _NeedsPydicomAliases:
        # `from pydicom import read_file` runs at import, before anyone knows the module holds a legacy handler.
        legacy_shims.install_pydicom_aliases()
        module, shimmed = import_model_module(spec, module_name, searched), True
    target = _attribute(module, attribute, spec) if attribute else _the_one_model(module, spec)
    model = _as_model(target, spec, module_name)
    if shimmed and not isinstance(model, LegacyHandlerModel):
        raise ModelNotFound(f"--model {spec!r}: {module_name} imports pydicom.read_file or write_file, removed in "
                            "pydicom 3 and given back to legacy handlers only: use pydicom.dcmread / dcmwrite")
    return model


class _NeedsPydicomAliases(Exception):
    pass


def import_model_module(spec: str, module_name: str, searched: Path | None):
    if not module_name:
        raise ModelNotFound(f"--model {spec!r} names no module: give package.module:Name")
    try:
        with worker_logging_kept(f"import of {module_name}"):
            return importlib.import_module(module_name)
    except ImportError as error:
        if (error.name == "pydicom" and not isinstance(error, ModuleNotFoundError)
                and any(name in str(error) for name in ("read_file", "write_file"))
                and not hasattr(sys.modules.get("pydicom"), "read_file")):
            raise _NeedsPydicomAliases from None
        if isinstance(error, ModuleNotFoundError) and error.name and (
                module_name == error.name or module_name.startswith(error.name + ".")):
            raise ModelNotFound(_not_found(spec, error.name, searched)) from None
        hint = porting_hints.hint(error, searched)
        raise ModelNotFound(_failed(spec, f"importing {module_name}", error, hint)) from None
    except (Exception, SystemExit) as error:  # a broken model module: its own error, in one line
        hint = porting_hints.hint(error, searched)
        raise ModelNotFound(_failed(spec, f"importing {module_name}", error, hint)) from None


def _not_found(spec: str, missing: str, searched: Path | None) -> str:
    places = f"{searched} (--model-dir) or " if searched else ""
    message = f"--model {spec!r}: no module named {missing!r} in {places}the installed packages of {sys.executable}"
    module_name = spec.partition(":")[0]
    if module_name.endswith(".py") or "/" in module_name or os.sep in module_name:
        message += "; name a module (my_model or my_package.module), not a file: --model-dir names its folder"
    return message


def _failed(spec: str, action: str, error: BaseException, hint: str = "") -> str:
    log.debug("--model %s: %s failed", spec, action, exc_info=error)
    return f"--model {spec!r}: {action} failed: {failure_text(error)}{hint}; {TRACEBACK_HINT}"


def failure_text(error: BaseException) -> str:
    """`Type: message (file, line N)`, the line being the model's own: what a model author needs first."""
    text = error.msg if isinstance(error, SyntaxError) else str(error)  # str() repeats file and line
    what = f"{type(error).__name__}: {text}" if text else type(error).__name__
    if isinstance(error, SystemExit):
        what = f"it called sys.exit({error.code!r})"
    where = _where(error)
    return f"{what}{f' ({where})' if where else ''}"


def _where(error: BaseException) -> str:
    """File and line where the error was raised: the model's line, not importlib's."""
    if isinstance(error, SyntaxError) and error.filename:
        return f"{error.filename}, line {error.lineno}"
    frames = [f for f in traceback.extract_tb(error.__traceback__)
              if not f.filename.startswith("<frozen") and "importlib" not in Path(f.filename).parts]
    return f"{frames[-1].filename}, line {frames[-1].lineno}" if frames else ""


def _attribute(module, attribute: str, spec: str):
    try:
        return getattr(module, attribute)
    except AttributeError:
        offered = ", ".join(_candidates(module)) or "none"
        raise ModelNotFound(
            f"--model {spec!r}: {module.__name__} ({getattr(module, '__file__', None) or 'no file'}) has no "
            f"attribute {attribute!r}; models and handler functions there: {offered}"
        ) from None


def _is_model_class(value, module) -> bool:
    return (inspect.isclass(value) and issubclass(value, Model) and value not in (Model, LegacyHandlerModel)
            and value.__module__.startswith(module.__name__))


def is_handler_function(value) -> bool:
    """An Arterys-style handler: a plain function taking exactly (json_input, dicom_instances, input_hash)."""
    if not inspect.isfunction(value):
        return False
    required = [p for p in inspect.signature(value).parameters.values()
                if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty]
    return len(required) == 3


def _candidates(module) -> list[str]:
    return [name for name, value in vars(module).items()
            if isinstance(value, Model) or _is_model_class(value, module)
            or (is_handler_function(value) and value.__module__ == module.__name__)]


def _the_one_model(module, spec: str):
    found = [value for value in vars(module).values() if isinstance(value, Model) or _is_model_class(value, module)]
    if len(found) == 1:
        return found[0]
    names = ", ".join(getattr(v, "__name__", type(v).__name__) for v in found) or "none"
    message = f"--model {spec!r} must expose exactly one Model (found: {names}); name one as {spec}:Name"
    handlers = [name for name, value in vars(module).items()
                if is_handler_function(value) and value.__module__ == module.__name__]
    if not found and handlers:
        message += f" (an Arterys handler function? {', '.join(handlers)}: name it as {spec}:{handlers[0]})"
    raise ModelNotFound(message)


def _as_model(target, spec: str, module_name: str) -> Model:
    if isinstance(target, Model):
        return target
    if is_handler_function(target):
        # The original SDK's form, hosted unchanged: its module name names it in metrics and Describe.
        return LegacyHandlerModel(target, name=module_name.rpartition(".")[2])
    if not callable(target):
        raise ModelNotFound(f"--model {spec!r} is a {type(target).__name__}, not a worker.Model, a Model class, "
                            "a factory or a handler(json_input, dicom_instances, input_hash) function")
    try:
        model = target()
    except Exception as error:
        raise ModelNotFound(_failed(spec, f"creating {getattr(target, '__name__', spec)}()", error)) from None
    if not isinstance(model, Model):
        raise ModelNotFound(f"--model {spec!r} gave a {type(model).__name__}, not a worker.Model")
    return model
