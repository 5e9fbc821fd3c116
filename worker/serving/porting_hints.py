"""What an import failure of a handler module written for the original Arterys SDK means, in one clause.

Such a module expects its own folder around it, as the SDK laid it out: `utils/` (`tagged_logger`),
`gateway.py` (the Flask gateway, importing flask and requests_toolbelt) and `logging.yaml`, opened relative
to the working directory. A module that finds one of them missing fails at import with a message that
names a file, not the cause; `hint` turns it into what to do, naming the porting guide.
"""

from __future__ import annotations

import os

PORTING_GUIDE = "docs/model-authors.md, 'Port a handler written for the original SDK'"
SDK_FOLDER_MODULES = ("utils", "gateway")  # the SDK's own files, beside the handler module
SDK_REQUIREMENTS = {"flask": "flask", "requests_toolbelt": "requests-toolbelt", "werkzeug": "werkzeug"}


def hint(error: BaseException, model_dir: str | os.PathLike | None) -> str:
    """'' when the error is not one of the original SDK's layout; else '; what to do (the guide)'."""
    folder = os.fspath(model_dir) if model_dir is not None else os.getcwd()
    name = (getattr(error, "name", None) or "").partition(".")[0] if isinstance(error, ImportError) else ""
    if name in SDK_FOLDER_MODULES:
        return (f"; '{name}' is part of the original Arterys SDK's folder (utils/, gateway.py, logging.yaml): copy "
                f"the handler's whole folder into {folder} and start the worker there, or see {PORTING_GUIDE}")
    if name in SDK_REQUIREMENTS:
        return (f"; the original SDK's gateway.py imports it: pip install {SDK_REQUIREMENTS[name]} (the handler "
                f"folder's requirements.txt) into this environment, or see {PORTING_GUIDE}")
    if isinstance(error, FileNotFoundError) and error.filename and not os.path.isabs(os.fspath(error.filename)):
        return (f"; {error.filename!r} is relative to the working directory {os.getcwd()}: the original SDK ran "
                f"from the handler's folder, so start the worker there (cd into it), see {PORTING_GUIDE}")
    return ""
