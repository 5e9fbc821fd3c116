"""One typed settings tree per service, from which its flags, environment variables and `--help` all come.

A service declares its settings as dataclasses. A field that can be set from outside carries `setting(...)`:
its help, and whatever its flag does not take from the field itself (another name, a unit, a switch). From
the tree, `build_parser` makes the argparse parser: each such field is `--field-name`, also read from the
variable PREFIX_FIELD_NAME, whose value becomes the flag's default, so that `--help` shows what is in force;
the help ends with the variable's name in brackets. A nested settings class (a field whose default_factory
is one) adds its flags where it stands, in a group of its own when it names one (`GROUP`), with its
`FLAG_PREFIX` before its fields' names. `read` turns the command line into the tree. A field without
`setting` keeps its default: it is not for operators to change.

Switches read their variable as true unless it is 0, false, no or off; an empty variable counts as unset.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Callable
from dataclasses import MISSING, dataclass, fields, is_dataclass
from typing import Any

FALSE_WORDS = ("0", "false", "no", "off")


@dataclass(frozen=True)
class Setting:
    help: str
    flag: str = ""  # "--name"; default: the field's name, '_' -> '-', after the class's FLAG_PREFIX
    env: str = ""  # the variable; default: the prefix, then the flag's name in upper case, '-' -> '_'
    env_note: str = ""  # what the help says of the variable; default: "[VARIABLE]"
    parse: Callable[[str], Any] | None = None  # text -> the flag's value; default: the type of its default
    to_value: Callable[[Any], Any] | None = None  # the flag's value -> the field's (ValueError: refused)
    shown: Callable[[Any], Any] | None = None  # the field's default -> the flag's (the inverse of to_value)
    switch: str = ""  # "on": --flag sets True; "off": --flag sets False; "both": --flag and --no-flag
    choices: tuple = ()
    required: bool = False  # required unless the variable is set
    append: bool = False  # repeatable; the variable holds several values, space separated


def setting(default: Any = MISSING, help: str = "", **options) -> Any:
    """A dataclass field set by a flag and a variable (see Setting for `options`)."""
    return dataclasses.field(default=default, metadata={"setting": Setting(help, **options)})


def switch_value(text: str | None) -> bool | None:
    """A switch's variable: True or False; None when unset or empty."""
    if text is None or not text.strip():
        return None
    return text.strip().lower() not in FALSE_WORDS


def _nested(field: dataclasses.Field) -> type | None:
    factory = field.default_factory
    return factory if isinstance(factory, type) and is_dataclass(factory) else None


def _default(field: dataclasses.Field):
    if field.default is not MISSING:
        return field.default
    return field.default_factory() if field.default_factory is not MISSING else None


def _flag(field: dataclasses.Field, spec: Setting, flag_prefix: str) -> str:
    return spec.flag or f"--{flag_prefix}{field.name.replace('_', '-')}"


def _variable(flag: str, spec: Setting, env_prefix: str) -> str:
    return spec.env or env_prefix + flag.removeprefix("--").upper().replace("-", "_")


def program_name(command: str, module: str) -> str:
    """How the user called the program: `command` (the installed console script) or `python -m module`."""
    invoked = os.path.basename(sys.argv[0] if sys.argv else "")
    return invoked if invoked == command else f"python -m {module}"


def build_parser(tree: type, env_prefix: str, **parser_options) -> argparse.ArgumentParser:
    """The parser of `tree`'s flags (ArgumentDefaultsHelpFormatter: every default is shown)."""
    parser = argparse.ArgumentParser(formatter_class=argparse.ArgumentDefaultsHelpFormatter, **parser_options)
    _add(parser, parser, tree, env_prefix, "")
    return parser


def _add(parser: argparse.ArgumentParser, group, tree: type, env_prefix: str, path: str) -> None:
    flag_prefix = getattr(tree, "FLAG_PREFIX", "")
    for field in fields(tree):
        nested = _nested(field)
        if nested is not None:
            title = getattr(nested, "GROUP", "")
            _add(parser, parser.add_argument_group(title) if title else group, nested, env_prefix,
                 f"{path}{field.name}.")
            continue
        spec = field.metadata.get("setting")
        if spec is not None:
            _add_flag(group, field, spec, f"{path}{field.name}", flag_prefix, env_prefix)


def _add_flag(group, field: dataclasses.Field, spec: Setting, dest: str, flag_prefix: str, env_prefix: str) -> None:
    flag = _flag(field, spec, flag_prefix)
    variable = _variable(flag, spec, env_prefix)
    text = os.environ.get(variable)
    help_text = f"{spec.help} {spec.env_note or f'[{variable}]'}"
    default = _default(field)
    shown = spec.shown(default) if spec.shown else default
    if spec.switch:
        value = switch_value(text)
        start = shown if value is None else value
        if spec.switch == "both":
            group.add_argument(flag, dest=dest, action=argparse.BooleanOptionalAction, default=start, help=help_text)
        else:
            group.add_argument(flag, dest=dest, action="store_true" if spec.switch == "on" else "store_false",
                               default=start, help=help_text)
        return
    if spec.append:
        group.add_argument(flag, dest=dest, action="append", default=(text or "").split(), help=help_text)
        return
    parse = spec.parse or (type(shown) if shown is not None else str)
    metavar = flag.removeprefix("--").upper().replace("-", "_")
    options = {"choices": spec.choices} if spec.choices else {"metavar": metavar}
    group.add_argument(flag, dest=dest, type=parse, default=parse(text) if text is not None else shown,
                       required=spec.required and text is None, help=help_text, **options)


def read(tree: type, parser: argparse.ArgumentParser, argv: list[str] | None = None):
    """The tree the command line (and the environment) describe. A value its field refuses (`to_value`
    raising ValueError) ends the program with one line naming it: such a flag is often set by a variable,
    and argparse's usage block would only hide the line that matters."""
    args = parser.parse_args(argv)
    try:
        return _build(tree, args, "")
    except ValueError as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")


def _build(tree: type, args: argparse.Namespace, path: str):
    values = {}
    for field in fields(tree):
        nested = _nested(field)
        if nested is not None:
            values[field.name] = _build(nested, args, f"{path}{field.name}.")
            continue
        spec = field.metadata.get("setting")
        if spec is None:
            continue
        value = getattr(args, f"{path}{field.name}")
        if spec.to_value is not None:
            value = spec.to_value(value)
        elif spec.append:
            value = tuple(value)
        values[field.name] = value
    return tree(**values)

