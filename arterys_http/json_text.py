"""Reading a JSON object sent by a client (the request JSON, a studyPath body): strict, and every failure a
sentence the sender can act on. Shared by the bridge and the worker, which must refuse the same things.

Strict where Python's json module is lenient: NaN, Infinity and -Infinity are not JSON and are refused.
Hostile input (nesting 100,000 deep, an integer of 5,000 digits) is refused with its own reason rather than
escaping as RecursionError or Python's own advice about its integer limit.
"""

from __future__ import annotations

import json

_JSON_NAMES = {dict: "an object", list: "an array", str: "a string", int: "a number", float: "a number",
               bool: "true or false", type(None): "null"}


class JsonProblem(ValueError):
    """Why the bytes are not the JSON object they should be; the message names `what` was read."""


def _not_json(name: str):
    raise ValueError(f"{name} is not a JSON value")


def load_json_object(raw: bytes, what: str) -> dict:
    """`raw` as a JSON object (empty or blank: `{}`); JsonProblem saying why not."""
    if not raw.strip():
        return {}
    try:
        value = json.loads(raw, parse_constant=_not_json)
    except RecursionError:
        raise JsonProblem(f"{what} is nested too deeply to be read") from None
    except UnicodeDecodeError:
        raise JsonProblem(f"{what} is not UTF-8 text") from None
    except ValueError as error:
        reason = str(error)
        if "integer string conversion" in reason:  # Python's limit on digits, worded as advice to a programmer
            reason = "it holds an integer of more than 4,300 digits"
        raise JsonProblem(f"{what} is not valid JSON: {reason[:200]}") from None
    if not isinstance(value, dict):
        raise JsonProblem(f"{what} must be a JSON object, got {_JSON_NAMES.get(type(value), type(value).__name__)}")
    return value
