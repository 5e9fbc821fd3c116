"""service_runtime/settings.py: a tree of dataclasses gives the flags, the variables, the help and the values."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import pytest

from service_runtime import settings
from service_runtime.settings import setting


@dataclass(frozen=True)
class Store:
    GROUP = "storing"
    FLAG_PREFIX = "store-"

    url: str = setting("", "where to")
    retries: int = setting(3, "how often")


@dataclass(frozen=True)
class Toy:
    name: str = setting(None, "the name", required=True)
    memory_bytes: int = setting(2 << 20, "memory", flag="--memory-mib", parse=float, shown=lambda b: b / (1 << 20),
                                to_value=lambda mib: int(mib * (1 << 20)))
    quiet: bool = setting(False, "say less", switch="on")
    checks: bool = setting(True, "skip the checks", flag="--no-checks", env="TOY_CHECKS", switch="off")
    extra: tuple[str, ...] = setting((), "more, repeatable", append=True)
    fixed: int = 7  # not an operator's to change: no flag
    store: Store = field(default_factory=Store)


def read(argv: list[str]):
    return settings.read(Toy, settings.build_parser(Toy, "TOY_", prog="toy"), argv)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    for name in ("TOY_NAME", "TOY_MEMORY_MIB", "TOY_QUIET", "TOY_CHECKS", "TOY_EXTRA", "TOY_STORE_URL",
                 "TOY_STORE_RETRIES"):
        monkeypatch.delenv(name, raising=False)


def test_flags_give_the_tree_and_defaults_stand_otherwise():
    toy = read(["--name", "x", "--memory-mib", "1.5", "--quiet", "--no-checks", "--extra", "a", "--extra", "b",
                "--store-retries", "5"])
    assert toy == Toy(name="x", memory_bytes=3 << 19, quiet=True, checks=False, extra=("a", "b"),
                      store=Store(retries=5))
    assert dataclasses.replace(read(["--name", "x"]), name=None) == Toy()


def test_variables_set_the_defaults_that_flags_override(monkeypatch):
    monkeypatch.setenv("TOY_NAME", "from-env")
    monkeypatch.setenv("TOY_MEMORY_MIB", "4")
    monkeypatch.setenv("TOY_QUIET", "yes")
    monkeypatch.setenv("TOY_CHECKS", "off")
    monkeypatch.setenv("TOY_EXTRA", "a b")
    monkeypatch.setenv("TOY_STORE_URL", "http://pacs")
    assert read([]) == Toy(name="from-env", memory_bytes=4 << 20, quiet=True, checks=False, extra=("a", "b"),
                           store=Store(url="http://pacs"))
    assert read(["--memory-mib", "1", "--store-url", "http://other"]).store.url == "http://other"


@pytest.mark.parametrize("text, value", [("1", True), ("on", True), ("0", False), ("false", False), ("No", False),
                                         ("", None), ("  ", None), (None, None)])
def test_a_switch_variable_is_true_unless_it_says_no_and_empty_is_unset(text, value):
    assert settings.switch_value(text) is value


def test_help_shows_each_variable_and_default_and_groups_a_nested_class():
    text = " ".join(settings.build_parser(Toy, "TOY_", prog="toy").format_help().split())
    for shown in ("the name [TOY_NAME] (default: None)", "memory [TOY_MEMORY_MIB] (default: 2.0)",
                  "skip the checks [TOY_CHECKS] (default: True)", "storing: --store-url STORE_URL where to "
                  "[TOY_STORE_URL] (default: )", "how often [TOY_STORE_RETRIES] (default: 3)"):
        assert shown in text
    assert "--fixed" not in text


def positive(number: int) -> int:
    if number <= 0:
        raise ValueError("--size must be positive")
    return number


def test_a_value_its_field_refuses_ends_the_program_with_one_line(capsys):
    @dataclass(frozen=True)
    class Strict:
        size: int = setting(1, "positive", to_value=positive)

    with pytest.raises(SystemExit) as stopped:
        settings.read(Strict, settings.build_parser(Strict, "TOY_", prog="strict"), ["--size", "-1"])
    assert stopped.value.code == 2 and capsys.readouterr().err == "strict: error: --size must be positive\n"
