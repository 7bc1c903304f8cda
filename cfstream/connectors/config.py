"""ContextFrame's ``connectors:`` config layout, and secrets from the environment or a file.

The guide's layout (connector type as key)::

    dataset: ./kb.lance            # cfstream addition: where load_connectors_config writes
    connectors:
      github:
        enabled: true
        token: ${GITHUB_TOKEN}
        owner: myorg
        repos: [documentation, api-specs]
        sync_options:
          file_patterns: ["**/*.md", "**/*.mdx"]
          exclude_paths: ["**/node_modules/**"]
      linear:
        enabled: true
        api_key: ${LINEAR_API_KEY}
        team_id: TEAM123
        sync_options: {states: ["In Progress", "Done"], labels: [documentation]}

:func:`load_connector_config` returns it as a dict with ``${VAR}`` expanded (the guide's recipe,
except that an unset variable is an error naming it, not an empty string);
:func:`load_connectors_config` converts it to cfstream's own :class:`~cfstream.config.Config`
(the ``sources:`` layout), so ``cfstream``'s pipeline, CLI and scheduler run it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from cfstream import safe_yaml
from cfstream.config import Config, StageSpec, expand_env, parse_config, read_config_text
from cfstream.connectors.base import DocumentFilter
from cfstream.connectors.services import CONNECTORS
from cfstream.errors import ConfigError
from cfstream.records import Document
from cfstream.secrets import Secret, redact

__all__ = (
    "SecretManager",
    "load_connector_config",
    "load_connectors_config",
)

_BOOL_WORDS = {"true": True, "yes": True, "on": True, "1": True}
_BOOL_WORDS.update({"false": False, "no": False, "off": False, "0": False})


def _read_yaml(path: Path) -> Any:
    text = read_config_text(path)
    try:
        return safe_yaml.load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None


def load_connector_config(
    config_file: str | os.PathLike[str], env: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Read a ``connectors:`` YAML file and expand ``${VAR}`` (the guide's recipe).

    ``env`` defaults to the process environment. ``${VAR:-default}`` gives a default and
    ``$${`` writes a literal ``${``.

    Raises:
        ConfigError: the file is missing or not YAML, it has no ``connectors:`` mapping, or a
            variable is unset (the message names it and the key).
    """
    path = Path(config_file)
    data = _read_yaml(path)
    if not isinstance(data, dict) or not isinstance(data.get("connectors"), dict):
        raise ConfigError(
            f"{path}: expected a `connectors:` mapping (connector type -> settings) at the top level"
        )
    expanded: dict[str, Any] = expand_env(data, os.environ if env is None else env)
    return expanded


def _escape(value: Any) -> Any:
    """Protect already-expanded strings from a second ``${VAR}`` expansion."""
    if isinstance(value, str):
        return value.replace("${", "$${")
    if isinstance(value, dict):
        return {k: _escape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_escape(v) for v in value]
    return value


def _only_for(name: str, predicate: DocumentFilter) -> DocumentFilter:
    def keep(doc: Document) -> bool:
        return doc.source_name != name or predicate(doc)

    keep.__name__ = f"{name}_sync_options"
    return keep


def load_connectors_config(
    config_file: str | os.PathLike[str],
    *,
    dataset: str | None = None,
    env: Mapping[str, str] | None = None,
) -> Config:
    """Convert a ``connectors:`` file into cfstream's :class:`~cfstream.config.Config`.

    Each enabled or disabled connector becomes a source named after its type, with its settings
    and ``sync_options`` turned into the Source's options (``file_patterns`` -> ``include``,
    ``team_id`` -> ``team_ids``, ...). Options the Source has no equivalent of (Linear's
    ``states`` and ``labels``, ``since`` for most services) become a filter stage for that source.
    ``dataset`` (or a top-level ``dataset:`` key) says where to write; ``sink:`` and
    ``pipeline:`` keys are cfstream's own. The sink defaults to ContextFrame compatibility.

    Raises:
        ConfigError: as :func:`load_connector_config`, plus unknown connector types, unknown
            settings or options, and a missing dataset.
    """
    path = Path(config_file)
    data = load_connector_config(path, env)
    target = dataset or data.get("dataset")
    if not isinstance(target, str) or not target:
        raise ConfigError(
            f"{path}: no dataset: add `dataset: ./kb.lance` at the top level or pass dataset="
        )
    unknown_top = sorted(set(data) - {"connectors", "dataset", "sink", "pipeline"})
    if unknown_top:
        raise ConfigError(
            f"{path}: unknown top-level key(s) {unknown_top}; expected connectors, dataset, sink, "
            "pipeline"
        )
    sources: dict[str, dict[str, Any]] = {}
    filters: list[StageSpec] = []
    for ctype, raw in data["connectors"].items():
        where = f"{path}: connectors.{ctype}"
        cls = CONNECTORS.get(str(ctype))
        if cls is None:
            raise ConfigError(
                f"{where}: unknown connector type {ctype!r}; use one of {', '.join(sorted(CONNECTORS))}"
            )
        if not isinstance(raw, dict):
            raise ConfigError(f"{where}: expected a mapping of settings")
        entry = dict(raw)
        enabled = entry.get("enabled", True)
        if isinstance(enabled, str) and enabled.strip().lower() in _BOOL_WORDS:
            enabled = _BOOL_WORDS[enabled.strip().lower()]
        if not isinstance(enabled, bool):
            raise ConfigError(f"{where}.enabled: expected true or false, got {enabled!r}")
        entry["enabled"] = enabled
        sync_options = entry.get("sync_options") or {}
        if not isinstance(sync_options, dict):
            raise ConfigError(f"{where}.sync_options: expected a mapping")
        try:
            connector = cls(**entry)
            options = {k: v for k, v in sync_options.items() if k != "modified_only"}
            source = connector.build_source(options)
            predicate = connector.filter_predicate(options)
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{where}: {redact(str(exc))}") from None
        source_options = {**connector.passthrough(), **connector.source_options(options, None)}
        if connector.native_since and options.get("since"):
            source_options["since"] = options["since"]
        sources[str(ctype)] = {"type": source.source_type, "enabled": enabled, **source_options}
        if predicate is not None:
            filters.append(
                StageSpec(
                    "filter",
                    {"predicate": _only_for(str(ctype), predicate), "name": f"{ctype}-filter"},
                    f"connectors.{ctype}.sync_options",
                )
            )
    top: dict[str, Any] = {
        "dataset": target,
        "sink": {"contextframe_compat": True, **(data.get("sink") or {})},
        "pipeline": data.get("pipeline") or [],
        "sources": sources,
    }
    cfg = parse_config(_escape(top), filename=str(path), env={}, base_dir=path.resolve().parent)
    return replace(cfg, stages=(*filters, *cfg.stages), path=path)


def _parse_dotenv(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export ") :].lstrip()
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise ValueError("expected KEY=VALUE lines")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        out[key.strip()] = value
    return out


def _flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in data.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_flatten(v, key + "."))
        elif v is not None:
            out[key] = str(v)
    return out


class SecretManager:
    """Secrets from the environment and an optional secrets file; values never logged.

    ``secrets.get("github.token")`` looks for the environment variable ``GITHUB_TOKEN`` (with
    ``env_prefix`` in front, if given), then for ``github.token`` in the file: nested keys in
    JSON/YAML (``{"github": {"token": ...}}``), a flat ``github.token`` key, or ``GITHUB_TOKEN``
    in a ``.env`` file. Every value is returned as a :class:`~cfstream.secrets.Secret` (printed as
    ``**********``, redacted from cfstream's logs and errors).

    Args:
        secrets_file: a ``.json``, ``.yaml``/``.yml`` or ``.env`` file (by its suffix).
        env: the environment to read (default: the process environment).
        env_prefix: prefix of the environment variable names (``"MYAPP_"``).

    Raises:
        ConfigError: the secrets file cannot be read or parsed (no value is shown).
    """

    def __init__(
        self,
        secrets_file: str | os.PathLike[str] | None = None,
        *,
        env: Mapping[str, str] | None = None,
        env_prefix: str = "",
    ) -> None:
        self._env = os.environ if env is None else env
        self.env_prefix = env_prefix
        self.secrets_file = Path(secrets_file) if secrets_file is not None else None
        self._file: dict[str, str] = {}
        if self.secrets_file is not None:
            self._file = self._load(self.secrets_file)

    @staticmethod
    def _load(path: Path) -> dict[str, str]:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read the secrets file {path}: {exc.strerror}") from None
        suffix = path.suffix.lower()
        try:
            if suffix == ".json":
                data: Any = json.loads(text)
            elif suffix in (".yaml", ".yml"):
                data = safe_yaml.load(text) or {}
            elif suffix == ".env" or path.name.startswith(".env"):
                data = _parse_dotenv(text)
            else:
                raise ConfigError(
                    f"secrets file {path}: unknown format; use a .json, .yaml/.yml or .env file"
                )
        except (ValueError, yaml.YAMLError):
            # the parser's message may quote a secret: say where, not what
            raise ConfigError(
                f"secrets file {path} is not valid {suffix.lstrip('.') or 'dotenv'}; fix its syntax"
            ) from None
        if not isinstance(data, Mapping):
            raise ConfigError(f"secrets file {path}: expected a mapping of names to secrets")
        flat = _flatten(data)
        for value in flat.values():
            Secret(value)  # registers it for redaction
        return flat

    def env_name(self, key: str) -> str:
        """The environment variable read for ``key`` (``github.token`` -> ``GITHUB_TOKEN``)."""
        return self.env_prefix + key.upper().replace(".", "_").replace("-", "_")

    def _find(self, key: str) -> str | None:
        value = self._env.get(self.env_name(key))
        if value is not None:
            return value
        for candidate in (key, self.env_name(key), key.upper()):
            if candidate in self._file:
                return self._file[candidate]
        return None

    def get(self, key: str, default: str | None = None) -> Secret:
        """The secret ``key`` (see the class docstring for where it is looked up).

        Raises:
            ConfigError: it is nowhere and there is no ``default`` (the message says where to
                put it).
        """
        value = self._find(key)
        if value is None:
            value = default
        if value is None:
            where = f"the environment variable {self.env_name(key)}"
            if self.secrets_file is not None:
                where += f" or {key!r} in {self.secrets_file}"
            raise ConfigError(f"secret {key!r} is not set: set {where}")
        return Secret(value)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self._find(key) is not None

    def __repr__(self) -> str:
        return f"SecretManager(file={str(self.secrets_file) if self.secrets_file else None!r})"
