"""Frozen dataclass configs, turned into command lines.

Each command has one frozen dataclass (``PrepareConfig``, ...). Fields are declared with
:func:`option`, whose ``help`` becomes the ``--help`` text, so the dataclass *is* the documentation.
:func:`run_command` parses ``argv`` into the dataclass, handles ``--print-config``, and turns a
:class:`~raydd.errors.RayddError` into one line on stderr and a non-zero exit code.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import types
import typing
from collections.abc import Callable, Sequence
from typing import Any, NoReturn, TypeVar

from raydd.devices import DEVICE_CHOICES
from raydd.errors import ConfigError, RayddError
from raydd.layout import default_store
from raydd.provenance import VERSION

C = TypeVar("C")

EXIT_USAGE = 2
EXIT_FAILURE = 1


# The sections of ``--help``: what a user sets on most runs, the preset a run resolves (overridable one field at a
# time), and the rest (cluster, resources, tracking). A field says its group with ``option(group=...)``; unsaid, the
# fields below are advanced and every other one is a run flag.
RUN, PRESET, ADVANCED = "run", "preset", "advanced"
GROUP_TITLES = {
    RUN: "run options",
    PRESET: "preset options (default: the preset's value; --print-config shows the resolved preset)",
    ADVANCED: "advanced options",
}
ADVANCED_BY_DEFAULT = frozenset({"ray_address", "experiment", "device"})


def option(
    default: Any,
    help: str,
    *,
    choices: Sequence[Any] | None = None,
    group: str | None = None,
    deprecated: Sequence[str] = (),
) -> Any:
    """A config field with its ``--help`` text, optionally the values it may take, its ``--help`` group and the
    old spellings of its flag (``deprecated``, e.g. ``("--split",)``): they still work for one release, hidden
    from ``--help``, and print one warning line naming the new flag."""
    metadata = {"help": help, "choices": choices, "group": group, "deprecated": tuple(deprecated)}
    return dataclasses.field(default=default, metadata=metadata)


def field_group(field: dataclasses.Field) -> str:
    """The ``--help`` group of a config field (:data:`GROUP_TITLES`)."""
    return field.metadata.get("group") or (ADVANCED if field.name in ADVANCED_BY_DEFAULT else RUN)


def flag_name(field_name: str) -> str:
    """The command-line flag of a config field: ``max_bad_fraction`` -> ``--max-bad-fraction``."""
    return "--" + field_name.replace("_", "-")


def check(condition: bool, field_name: str, allowed: str) -> None:
    """Raise a :class:`ConfigError` naming the flag and what it accepts unless ``condition`` holds."""
    if not condition:
        raise ConfigError(f"{flag_name(field_name)}: expected {allowed}")


def check_choice(value: Any, field_name: str, choices: Sequence[Any]) -> None:
    check(value in choices, field_name, f"one of {', '.join(map(str, choices))}; got {value!r}")


def to_dict(config: Any) -> dict[str, Any]:
    """The config as plain JSON-able data (``config.json`` in its MLflow run)."""
    return dataclasses.asdict(config)


# Sections every command shares, defined once: a command's config inherits the ones it needs (frozen dataclasses
# inherit fields; a command may redeclare a field to give it its own default or help).
@dataclasses.dataclass(frozen=True)
class StoreSection:
    store: str | None = option(
        None, "store URI (path, file://, s3://...; default $RAYDD_STORE, else ./raydd-store); see raydd.layout"
    )


@dataclasses.dataclass(frozen=True)
class RaySection:
    ray_address: str | None = option(None, "Ray cluster to join (default: RAY_ADDRESS, else a new local cluster)")


@dataclasses.dataclass(frozen=True)
class TrackingSection:
    experiment: str = option("raydd", "MLflow experiment name")


@dataclasses.dataclass(frozen=True)
class DeviceSection:
    device: str = option("auto", "device of each worker", choices=DEVICE_CHOICES)


@dataclasses.dataclass(frozen=True)
class SeedSection:
    seed: int = option(0, "seed of every random choice")


def prefixed(
    section: type,
    prefix: str,
    name: str,
    *,
    only: Sequence[str] | None = None,
    defaults: dict[str, Any] | None = None,
    deprecated: dict[str, Sequence[str]] | None = None,
    notes: dict[str, str] | None = None,
    group: str | None = None,
) -> type:
    """``section``'s fields (``only`` those, if given) as a frozen section of their own, each named ``prefix`` +
    field (``runs`` -> ``eval_runs``) with the same type, help and choices: one declaration, read by a command
    whose other flags would collide with the bare names. ``defaults``: a command's own default for a field, by
    bare name (the caller says why); ``deprecated``: the command's old spellings of a flag, by bare name;
    ``notes``: what a field means in this command, added to its help; ``group``: the ``--help`` group of every
    field but the first. :meth:`unprefixed` gives the values back under the section's names."""
    defaults, deprecated, notes = defaults or {}, deprecated or {}, notes or {}
    hints = typing.get_type_hints(section)
    chosen = [f for f in dataclasses.fields(section) if only is None or f.name in only]
    fields = []
    for index, field in enumerate(chosen):
        metadata = {
            **field.metadata,
            "help": field.metadata["help"] + (f"; {notes[field.name]}" if field.name in notes else ""),
            "deprecated": tuple(deprecated.get(field.name, ())),
            "group": field.metadata.get("group") if index == 0 or group is None else group,
        }
        default = defaults.get(field.name, field.default)
        fields.append((prefix + field.name, hints[field.name], dataclasses.field(default=default, metadata=metadata)))

    def unprefixed(self: Any) -> dict[str, Any]:
        return {field.name: getattr(self, prefix + field.name) for field in chosen}

    made = dataclasses.make_dataclass(name, fields, frozen=True, namespace={"unprefixed": unprefixed})
    made.__module__ = section.__module__
    return made


def resolve_defaults(config: C) -> C:
    """Fill the defaults that depend on the environment, after parsing: an unset ``store`` becomes
    :func:`~raydd.layout.default_store` (``$RAYDD_STORE`` read now, not at import)."""
    if isinstance(config, StoreSection) and config.store is None:
        return dataclasses.replace(config, store=default_store())
    return config


class _DeprecatedFlag(argparse.Action):
    """An old spelling of a flag: stores like the new one and prints one warning line naming it."""

    def __init__(self, *args: Any, new_flag: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.new_flag = new_flag

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any, flag: Any) -> None:
        print(
            f"{parser.prog}: warning: {flag} is deprecated and goes in the next release; use {self.new_flag}",
            file=sys.stderr,
        )
        setattr(namespace, self.dest, values)


class _OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (``prog: error: ...``) instead of usage + error."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def _unwrap_optional(hint: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return hint, False


def build_parser(config_cls: type, prog: str, description: str) -> argparse.ArgumentParser:
    parser = _OneLineParser(
        prog=prog, description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter, add_help=False
    )
    groups = {name: parser.add_argument_group(title) for name, title in GROUP_TITLES.items()}
    groups[RUN].add_argument("-h", "--help", action="help", help="show this help and exit")
    hints = typing.get_type_hints(config_cls)
    order = list(GROUP_TITLES)
    for field in sorted(dataclasses.fields(config_cls), key=lambda f: order.index(field_group(f))):
        kind, _ = _unwrap_optional(hints[field.name])
        kwargs: dict[str, Any] = {"help": field.metadata.get("help", ""), "default": field.default}
        if kind is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = kind
            kwargs["metavar"] = kind.__name__.upper()
            if field.metadata.get("choices"):
                kwargs["choices"] = list(field.metadata["choices"])
                kwargs["metavar"] = "{" + ",".join(map(str, kwargs["choices"])) + "}"
        groups[field_group(field)].add_argument(flag_name(field.name), dest=field.name, **kwargs)
        for old in field.metadata.get("deprecated", ()):
            if kind is bool:
                raise TypeError(f"{field.name}: a deprecated spelling of a boolean flag is not supported")
            hidden = {k: v for k, v in kwargs.items() if k not in ("help", "default")}
            parser.add_argument(
                old,
                dest=field.name,
                action=_DeprecatedFlag,
                new_flag=flag_name(field.name),
                help=argparse.SUPPRESS,
                default=argparse.SUPPRESS,
                **hidden,
            )
    groups[RUN].add_argument(
        "--print-config",
        action="store_true",
        help="print the resolved config as JSON (what the run would use) and exit",
    )
    groups[RUN].add_argument("--version", action="version", version=f"%(prog)s (raydd {VERSION})")
    return parser


def parse_config(config_cls: type[C], argv: Sequence[str], prog: str, description: str = "") -> tuple[C, bool]:
    """Parse ``argv`` into ``config_cls``; returns the config and whether ``--print-config`` was given."""
    parser = build_parser(config_cls, prog, description)
    namespace = vars(parser.parse_args(list(argv)))
    print_config = namespace.pop("print_config")
    try:
        return resolve_defaults(config_cls(**namespace)), print_config
    except ConfigError as error:
        parser.error(str(error))


def run_command(
    config_cls: type[C],
    run: Callable[[C], Any],
    argv: Sequence[str] | None,
    prog: str,
    description: str,
    printed: Callable[[C], dict[str, Any]] = to_dict,
) -> int:
    """The body of every ``python -m raydd.<command>``: parse, maybe print the config, run, report. ``printed``:
    what ``--print-config`` prints, the config as the run will use it (a command that resolves more at its edge,
    a preset, prints that too)."""
    config, print_config = parse_config(config_cls, sys.argv[1:] if argv is None else argv, prog, description)
    try:
        if print_config:
            print(json.dumps(printed(config), indent=2, sort_keys=True))
            return 0
        run(config)
    except RayddError as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return EXIT_FAILURE
    return 0
