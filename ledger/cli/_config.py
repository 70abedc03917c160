"""Settings of the command line: the environment and an optional config file.

Precedence, highest first: the command line, then the environment, then the
config file, then the built-in defaults. Click does the layering: each option
reads its own environment variable, ``QLEDGER_<COMMAND>_<OPTION>`` (the long
option name, ``-`` as ``_``: ``QLEDGER_INGEST_JOBS``, ``QLEDGER_SHOW_ALL``;
``QLEDGER_DEBUG`` and ``QLEDGER_VERBOSE`` for the group's), and the config
file becomes click's ``default_map``. The central ledger, used when a command
that takes one (ingest, lineage, watch, report) is given none, is
``$QLEDGER_CENTRAL``, else ``central`` in the config file.

The config file is ``$QLEDGER_CONFIG`` if set (it must exist), else
``$XDG_CONFIG_HOME/qledger/config.toml`` (``~/.config/qledger/config.toml``)
if it exists. TOML: top-level ``central``, ``debug`` and ``verbose``, and a
table per command whose keys are its long option names. Options that make a
command write or act (`COMMAND_LINE_ONLY`) come from the command line only:
a forgotten variable must never make an inspection write.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from ..errors import SettingsError

__all__ = [
    "CENTRAL_ENV",
    "COMMAND_LINE_ONLY",
    "CONFIG_ENV",
    "Settings",
    "central_target",
    "config_path",
    "load_settings",
    "no_central",
    "remember",
    "set_command_envvars",
    "set_envvars",
]

#: The environment variable naming the central ledger (a SQLite path or a URL).
CENTRAL_ENV = "QLEDGER_CENTRAL"
#: The environment variable naming the config file.
CONFIG_ENV = "QLEDGER_CONFIG"
_PREFIX = "QLEDGER"
#: Parameters never taken from the environment or the config file: they write or act.
COMMAND_LINE_ONLY = frozenset(
    {"help", "version", "adopt", "remove", "force", "into_existing", "output"}
)
#: Where the settings live in `click.Context.meta`.
_META_KEY = "qledger.settings"


@dataclass
class Settings:
    """What the environment and the config file set."""

    #: The config file read, if one was.
    path: Path | None = None
    #: ``central`` from the config file.
    central: str | None = None
    #: Click's ``default_map``: the group's defaults, and a mapping per command.
    default_map: dict[str, Any] = field(default_factory=dict)


def config_path() -> Path | None:
    """The config file to read: ``$QLEDGER_CONFIG``, else the user's, if it exists.

    Raises:
        SettingsError: ``$QLEDGER_CONFIG`` names a file that does not exist.
    """
    named = os.environ.get(CONFIG_ENV)
    if named:
        path = Path(named).expanduser()
        if not path.is_file():
            raise SettingsError(
                f"{CONFIG_ENV} names {path}, which is not a file: create it, or unset {CONFIG_ENV}"
            )
        return path
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path("~/.config").expanduser())
    path = Path(base) / "qledger" / "config.toml"
    return path if path.is_file() else None


def _option_names(command: click.Command) -> dict[str, click.Parameter]:
    """A command's options by the names a config file may use: ``batch-size``, ``batch_size``."""
    names: dict[str, click.Parameter] = {}
    for param in command.params:
        if not isinstance(param, click.Option) or param.name in COMMAND_LINE_ONLY:
            continue
        for opt in param.opts:
            if opt.startswith("--"):
                names[opt[2:]] = param
                names[opt[2:].replace("-", "_")] = param
    return names


def _defaults(
    command: click.Command, table: Any, path: Path, where: str, ctx: click.Context
) -> dict[str, Any]:
    """One command's table of the config file as click's ``default_map`` for it."""
    if not isinstance(table, dict):
        raise SettingsError(f"{path}: {where} must be a table of option defaults")
    known = _option_names(command)
    found: dict[str, Any] = {}
    for key, value in table.items():
        param = known.get(key)
        if param is None or param.name is None:
            names = sorted({k for k in known if "_" not in k or k.replace("_", "-") not in known})
            raise SettingsError(
                f"{path}: {where} has no option {key!r}"
                + (f" (it has: {', '.join(names)})" if names else " that a file may set")
            )
        try:
            param.type_cast_value(ctx, value)
        except click.BadParameter as e:
            raise SettingsError(f"{path}: {where}.{key} = {value!r}: {e.format_message()}") from e
        found[param.name] = value
    return found


def load_settings(group: click.Group) -> Settings:
    """The config file's settings, checked against the group's commands and options.

    Raises:
        SettingsError: the file cannot be read, is not TOML, or names an
            unknown command or option, or a value the option refuses.
    """
    path = config_path()
    if path is None:
        return Settings()
    import tomllib  # only when there is a file to read

    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise SettingsError(f"cannot read config file {path}: {e.strerror or e}") from e
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise SettingsError(f"{path} is not valid TOML: {e}") from e
    settings = Settings(path=path)
    ctx = click.Context(group)
    group_options = _option_names(group)
    for key, value in data.items():
        if key == "central":
            if not isinstance(value, str) or not value:
                raise SettingsError(f"{path}: central must be a path or URL (a string)")
            settings.central = value
        elif key in group_options:
            settings.default_map.update(_defaults(group, {key: value}, path, "the top level", ctx))
        elif key in group.list_commands(ctx):
            command = group.get_command(ctx, key)
            assert command is not None
            settings.default_map[key] = _defaults(command, value, path, f"[{key}]", ctx)
        else:
            raise SettingsError(
                f"{path}: unknown setting {key!r}: the top level takes central, "
                f"{', '.join(sorted(k for k in group_options if '_' not in k))} and a table "
                "per command ([ingest], [show], ...)"
            )
    return settings


def set_envvars(group: click.Group) -> None:
    """Give every option its ``QLEDGER_[<COMMAND>_]<OPTION>`` variable (but `COMMAND_LINE_ONLY`).

    The group's own options, and those of the commands already loaded; a command
    loaded later (the group imports them lazily) gets its own by `set_command_envvars`.
    """
    _set_envvars(group, "")
    for name, command in group.commands.items():
        set_command_envvars(name, command)


def set_command_envvars(name: str, command: click.Command) -> None:
    """Give a command's options their ``QLEDGER_<COMMAND>_<OPTION>`` variables."""
    _set_envvars(command, f"{name}_")


def _set_envvars(command: click.Command, prefix: str) -> None:
    for param in command.params:
        if not isinstance(param, click.Option):
            continue
        if param.name in COMMAND_LINE_ONLY:
            param.allow_from_autoenv = False
            param.envvar = None
            continue
        if param.envvar:
            continue
        long = next((opt[2:] for opt in param.opts if opt.startswith("--")), None)
        if long is not None:
            param.envvar = f"{_PREFIX}_{prefix}{long}".upper().replace("-", "_")


def remember(ctx: click.Context, settings: Settings) -> None:
    """Keep the settings with the command line's root context."""
    ctx.meta[_META_KEY] = settings


def central_target() -> str | None:
    """The central ledger: ``$QLEDGER_CENTRAL``, else the config file's ``central``, else None."""
    named = os.environ.get(CENTRAL_ENV)
    if named:
        return named
    ctx = click.get_current_context(silent=True)
    settings = ctx.find_root().meta.get(_META_KEY) if ctx is not None else None
    if isinstance(settings, Settings) and settings.central:
        return settings.central
    return None


def no_central(what: str) -> str:
    """The message for a command given no TARGET while no central ledger is set."""
    return (
        f"{what}: no TARGET given and no central ledger set: give one, or set {CENTRAL_ENV} "
        '(or central = "..." in the config file, see qledger --help)'
    )
