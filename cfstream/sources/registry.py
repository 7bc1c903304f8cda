"""Finding a source class by its type name.

A type name is a built-in connector (``github``, ``slack``, ...), a name registered by an installed
package under the ``cfstream.sources`` entry-point group, or ``"package.module:Class"``.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import Any

from cfstream.errors import ConfigError

__all__ = ("BUILTIN_SOURCES", "available_sources", "load_source_class")

#: built-in connectors: type name -> "module:Class"
BUILTIN_SOURCES: dict[str, str] = {
    "github": "cfstream.sources.github:GitHubSource",
    "linear": "cfstream.sources.linear:LinearSource",
    "obsidian": "cfstream.sources.obsidian:ObsidianSource",
    "notion": "cfstream.sources.notion:NotionSource",
    "slack": "cfstream.sources.slack:SlackSource",
    "discord": "cfstream.sources.discord:DiscordSource",
    "google_drive": "cfstream.sources.google_drive:GoogleDriveSource",
    "files": "cfstream.sources.files:FilesSource",
}
_ALIASES = {"gdrive": "google_drive", "google-drive": "google_drive", "googledrive": "google_drive"}


def _import(target: str) -> Any:
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"{target!r} is not of the form 'package.module:Class'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"cannot import {module_name!r} for source {target!r}: {exc}") from exc
    except SyntaxError as exc:
        raise ConfigError(
            f"cannot import {module_name!r} for source {target!r}: {exc.msg} ({exc.filename}, "
            f"line {exc.lineno}): fix the module's syntax"
        ) from exc
    except Exception as exc:  # the module's own code raised while it was imported
        raise ConfigError(
            f"importing {module_name!r} for source {target!r} raised {type(exc).__name__}: {exc} "
            "(run with --traceback to see where)"
        ) from exc
    try:
        return getattr(module, attr)
    except AttributeError as exc:
        raise ConfigError(f"module {module_name!r} has no {attr!r}") from exc


def available_sources() -> dict[str, str]:
    """Every known type name (built-in and entry points) with its ``module:Class`` target."""
    out = dict(BUILTIN_SOURCES)
    for ep in entry_points(group="cfstream.sources"):
        out.setdefault(ep.name, ep.value)
    return out


def load_source_class(type_name: str) -> Any:
    """The class for ``type_name``; a ConfigError listing the known names when there is none."""
    name = _ALIASES.get(type_name, type_name)
    if name in BUILTIN_SOURCES:
        return _import(BUILTIN_SOURCES[name])
    for ep in entry_points(group="cfstream.sources"):
        if ep.name == name:
            try:
                return ep.load()
            except Exception as exc:
                raise ConfigError(
                    f"the plugin source {name!r} ({ep.value}) failed to load: {exc}"
                ) from exc
    if ":" in name:
        return _import(name)
    known = ", ".join(sorted(available_sources()))
    raise ConfigError(
        f"unknown source type {type_name!r}: use one of {known}, an installed plugin's name, "
        "or 'package.module:Class'"
    )
