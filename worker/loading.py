"""Finds the model a worker hosts from `--model`: `package.module:Name`, or a package exposing one model."""

from __future__ import annotations

import importlib
import inspect

from worker.api import Model


class ModelNotFound(Exception):
    pass


def load_model_object(spec: str) -> Model:
    """Imports `spec` and returns a Model instance (classes and factories are called without arguments)."""
    module_name, _, attribute = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ModelNotFound(f"cannot import {module_name!r} for --model {spec!r}: {error}") from error
    if attribute:
        try:
            target = getattr(module, attribute)
        except AttributeError as error:
            raise ModelNotFound(f"{module_name!r} has no attribute {attribute!r}") from error
    else:
        target = _the_one_model(module, spec)
    model = target() if inspect.isclass(target) or (callable(target) and not isinstance(target, Model)) else target
    if not isinstance(model, Model):
        raise ModelNotFound(f"--model {spec!r} gave a {type(model).__name__}, not a worker.Model")
    return model


def _the_one_model(module, spec: str):
    found = [
        value for value in vars(module).values()
        if isinstance(value, Model) or (inspect.isclass(value) and issubclass(value, Model) and value is not Model
                                         and value.__module__.startswith(module.__name__))
    ]
    if len(found) != 1:
        names = ", ".join(getattr(v, "__name__", type(v).__name__) for v in found) or "none"
        raise ModelNotFound(
            f"--model {spec!r} must expose exactly one Model (found: {names}); name one as {spec}:Name"
        )
    return found[0]
