"""The YAML config of the ``cfstream`` command: loading, ``${VAR}`` expansion, validation, building.

::

    dataset: ./kb.lance                # any Lance URI; a relative path is relative to this file
    sink: {mode: upsert, batch_rows: 10000, contextframe_compat: false}
    pipeline:                          # optional stages applied to every source, in order
      - tag: ["kb"]
      - validate: {}
      - map: mypackage.cleaning:strip_html
        concurrency: 8
      - dedupe: {}
      - chunk: {max_tokens: 512, overlap: 64}
      - embed: {provider: local}       # vectors; or openai with model, base_url, api_key: ${KEY}
    sources:
      docs:                            # the source's name: its cursor is kept under it
        type: github                   # a built-in name, an entry-point name, or "package.module:Class"
        token: ${GITHUB_TOKEN}
        owner: myorg
        repos: [documentation]
        schedule: 1h                   # for `cfstream watch`

The file (at most :data:`MAX_CONFIG_BYTES`) is parsed like ``yaml.safe_load`` (tags that build
Python objects are refused) by :mod:`cfstream.safe_yaml`, which refuses alias bombs, recursive aliases
and absurd nesting before anything walks the data; string values
get ``${VAR}`` / ``${VAR:-default}`` expansion from the ``env`` mapping handed in (a missing variable
is an error naming it; ``$${`` writes a literal ``${``), and everything is validated with pydantic:
the top level by :class:`ConfigFile`, each source's options by its connector's ``config_model``
(chosen by ``type``, so the union of source kinds grows with the installed connectors). Every error
names the file, the key path (``sources.docs.repos[1]``), the line, and what was expected.
"""

from __future__ import annotations

import builtins
import importlib
import importlib.util
import re
import sys
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from cfstream import safe_yaml
from cfstream.contract.uris import local_path
from cfstream.engine.pipeline import Pipeline
from cfstream.errors import ConfigError
from cfstream.secrets import Secret, redact
from cfstream.sinks.lance import LanceSink
from cfstream.sources.base import Source, SourceConfig
from cfstream.sources.options import is_secret_annotation, option_errors
from cfstream.sources.registry import load_source_class
from cfstream.transforms import Stage
from cfstream.transforms import chunk as chunk_stage
from cfstream.transforms import dedupe as dedupe_stage
from cfstream.transforms import embed as embed_stage
from cfstream.transforms import filter as filter_stage
from cfstream.transforms import map as map_stage
from cfstream.transforms import tag as tag_stage
from cfstream.transforms import validate as validate_stage

__all__ = (
    "COMMON_SOURCE_KEYS",
    "MAX_CONFIG_BYTES",
    "Config",
    "ConfigFile",
    "IndexOptions",
    "SinkSettings",
    "SourceSpec",
    "StageSpec",
    "build_pipeline",
    "build_pipelines",
    "build_sink",
    "build_source",
    "build_stages",
    "dataset_sources",
    "expand_env",
    "is_secret_annotation",
    "load_config",
    "parse_config",
    "parse_duration",
    "read_config_text",
    "select_sources",
)

#: the largest config file :func:`load_config` reads (bytes)
MAX_CONFIG_BYTES = 1024 * 1024

#: keys every source accepts, handled by cfstream itself (never passed to the connector)
COMMON_SOURCE_KEYS = ("type", "enabled", "schedule", "max_concurrency")

_VAR = re.compile(r"\$\$\{|\$\{([^}]*)\}")
_VAR_BODY = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)(?::-(.*))?$", re.DOTALL)
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)", re.IGNORECASE)
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_BOOL_WORDS = {
    "true": True,
    "yes": True,
    "on": True,
    "1": True,
    "false": False,
    "no": False,
    "off": False,
    "0": False,
}


# ------------------------------------------------------------------------------------------------
# models
# ------------------------------------------------------------------------------------------------
class IndexOptions(BaseModel):
    """The ``sink: index:`` block: :class:`~cfstream.sinks.indexes.IndexSettings` fields."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    fts: bool | Literal["auto"] = "auto"
    vector: bool | Literal["auto"] = "auto"
    vector_min_rows: int = Field(20_000, ge=1)
    vector_index_type: Literal["IVF_PQ", "IVF_HNSW_SQ"] = "IVF_HNSW_SQ"
    metric: Literal["cosine", "l2", "dot"] = "cosine"
    refresh_seconds: float = Field(30.0, ge=0)
    merge_rows: int = Field(50_000, ge=0)


class SinkSettings(BaseModel):
    """The ``sink:`` block: :class:`~cfstream.sinks.LanceSink` keyword arguments."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Literal["upsert", "append"] = "upsert"
    batch_rows: int = Field(10_000, ge=1)
    batch_bytes: int = Field(64 * 1024 * 1024, ge=1)
    max_latency: float = Field(10.0, gt=0)
    max_inflight: int = Field(2, ge=1)
    embed_dim: int | None = Field(None, ge=1)
    contextframe_compat: bool = False
    compress_text: bool = False
    index_threshold: int = Field(100_000, ge=1)
    optimize_every: int = Field(20, ge=0)
    maintenance_every: int = Field(100, ge=0)
    conflict_retries: int = Field(8, ge=0)
    storage_options: dict[str, str] | None = None
    #: the search indexes the sink keeps (``false``: none)
    index: IndexOptions | bool | None = None


class ConfigFile(BaseModel):
    """The top level of a config file (source options are checked per connector afterwards)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dataset: str = Field(min_length=1)
    sink: SinkSettings = Field(default_factory=SinkSettings)  # type: ignore[arg-type]
    pipeline: list[dict[str, Any]] = Field(default_factory=list)
    sources: dict[str, dict[str, Any]] = Field(min_length=1)


@dataclass(frozen=True, slots=True)
class StageSpec:
    """One validated ``pipeline:`` entry; :meth:`build` makes a fresh stage (stages keep state)."""

    kind: str
    options: Mapping[str, Any]
    key_path: str

    def build(self) -> Stage:
        """A new stage instance for one pipeline."""
        opts = dict(self.options)
        if self.kind == "tag":
            return tag_stage(*opts["tags"])
        if self.kind == "validate":
            return validate_stage(**opts)
        if self.kind == "dedupe":
            return dedupe_stage(**opts)
        if self.kind == "map":
            fn = opts.pop("function")
            return map_stage(fn, **opts)
        if self.kind == "filter":
            return filter_stage(opts["predicate"], name=opts.get("name"))
        if self.kind == "chunk":
            return chunk_stage(**opts)
        if self.kind == "embed":
            from cfstream.embed import embedder_from_config

            reembed = bool(opts.pop("reembed", False))
            batch_size = opts.get("batch_size")
            concurrency = opts.get("concurrency")
            extra = {"api_version": opts.pop("api_version")} if opts.get("api_version") else None
            embedder = embedder_from_config(
                opts.pop("provider"),
                model=opts.get("model"),
                base_url=opts.get("base_url"),
                api_key=opts.get("api_key"),
                dim=opts.get("dim"),
                batch_size=batch_size,
                concurrency=concurrency,
                options=extra,
            )
            return embed_stage(
                embedder, batch_size=batch_size, concurrency=concurrency, reembed=reembed
            )
        raise ConfigError(f"{self.key_path}: unknown stage {self.kind!r}")  # pragma: no cover


@dataclass(frozen=True, slots=True)
class SourceSpec:
    """One validated entry of ``sources:``."""

    name: str
    type: str
    cls: builtins.type[Source]
    options: Mapping[str, Any]
    enabled: bool = True
    schedule: float | None = None
    schedule_text: str | None = None
    max_concurrency: int | None = None
    secret_keys: frozenset[str] = frozenset()

    @property
    def source_type(self) -> str:
        """The ``source_type`` the connector stores in its records."""
        return str(getattr(self.cls, "source_type", self.type))

    def describe_options(self) -> dict[str, Any]:
        """The options with every secret value masked, for display."""
        return {
            k: ("**********" if k in self.secret_keys else _display(v))
            for k, v in self.options.items()
        }


@dataclass(frozen=True, slots=True)
class Config:
    """A loaded, validated config file."""

    dataset: str
    sink: SinkSettings
    stages: tuple[StageSpec, ...]
    sources: Mapping[str, SourceSpec]
    path: Path | None = None
    lines: Mapping[str, int] = field(default_factory=dict)

    @property
    def enabled_sources(self) -> list[str]:
        """Names of the sources with ``enabled: true`` (the default)."""
        return [n for n, s in self.sources.items() if s.enabled]


# ------------------------------------------------------------------------------------------------
# errors with file, key path and line
# ------------------------------------------------------------------------------------------------
def _join(path: Sequence[str | int]) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


class _Where:
    def __init__(self, filename: str, lines: Mapping[str, int]) -> None:
        self.filename = filename
        self.lines = lines

    def line(self, path: Sequence[str | int]) -> int | None:
        parts = list(path)
        while parts:
            line = self.lines.get(_join(parts))
            if line is not None:
                return line
            parts.pop()
        return None

    def at(self, path: Sequence[str | int], message: str) -> str:
        line = self.line(path)
        where = f"{self.filename}:{line}" if line is not None else self.filename
        key = _join(path)
        return redact(f"{where}: {key}: {message}" if key else f"{where}: {message}")

    def error(self, path: Sequence[str | int], message: str) -> ConfigError:
        return ConfigError(self.at(path, message))


def _display(value: Any) -> Any:
    if isinstance(value, SecretStr):
        return "**********"
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, list | tuple):
        return [_display(v) for v in value]
    if isinstance(value, dict):
        return {k: _display(v) for k, v in value.items()}
    return value


def _secret_fields(model: type[BaseModel] | None) -> frozenset[str]:
    if model is None:
        return frozenset()
    return frozenset(n for n, f in model.model_fields.items() if is_secret_annotation(f.annotation))


def _translate(
    exc: ValidationError,
    where: _Where,
    prefix: Sequence[str | int],
    model: type[BaseModel] | None,
    options: Mapping[str, Any] | None = None,
) -> ConfigError:
    """One ConfigError listing every pydantic error with its file, key path and line (the
    messages of :func:`cfstream.sources.options.option_errors`: no secret value in them)."""
    messages = [
        where.at([*prefix, *loc], msg) for loc, msg in option_errors(exc, model, options or {})
    ]
    head = "invalid config" if len(messages) > 1 else ""
    return ConfigError("\n".join([head, *messages]) if head else messages[0])


# ------------------------------------------------------------------------------------------------
# YAML
# ------------------------------------------------------------------------------------------------
def _line_map(node: yaml.Node | None, where: _Where) -> dict[str, int]:
    """Key path -> 1-based line of every key and item; refuses duplicate keys."""
    out: dict[str, int] = {}

    def walk(n: yaml.Node, path: list[str | int]) -> None:
        if isinstance(n, yaml.MappingNode):
            seen: set[str] = set()
            for key_node, value_node in n.value:
                key = str(key_node.value)
                kpath = [*path, key]
                if key in seen:
                    out.setdefault(_join(kpath), key_node.start_mark.line + 1)
                    raise where.error(
                        kpath,
                        f"duplicate key {key!r} (line {key_node.start_mark.line + 1}); keep one",
                    )
                seen.add(key)
                out[_join(kpath)] = key_node.start_mark.line + 1
                walk(value_node, kpath)
        elif isinstance(n, yaml.SequenceNode):
            for i, item in enumerate(n.value):
                ipath = [*path, i]
                out[_join(ipath)] = item.start_mark.line + 1
                walk(item, ipath)

    if node is not None:
        walk(node, [])
    return out


def _load_yaml(text: str, filename: str) -> tuple[Any, dict[str, int]]:
    try:
        node = safe_yaml.compose(text)
        lines = _line_map(node, _Where(filename, {}))  # before construct() flattens `<<:` merges
        data = safe_yaml.construct(node)
    except safe_yaml.YAMLLimitError as exc:
        raise ConfigError(f"{filename}: {exc}") from None
    except yaml.constructor.ConstructorError as exc:
        mark = exc.problem_mark
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = exc.problem or "unsupported YAML"
        if "python/" in problem or "could not determine a constructor" in problem:
            problem = (
                f"{problem.strip()}: YAML tags that build Python objects are not allowed in a "
                "cfstream config; write plain values (strings, numbers, lists, mappings)"
            )
        raise ConfigError(f"{filename}{line}: {problem}") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError(
            f"{filename}{line}: not valid YAML: {exc.problem or exc}"
            + (f" ({exc.context})" if exc.context else "")
        ) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{filename}: not valid YAML: {exc}") from None
    return data, lines


# ------------------------------------------------------------------------------------------------
# ${VAR} expansion
# ------------------------------------------------------------------------------------------------
def expand_env(value: Any, env: Mapping[str, str], where: _Where | None = None) -> Any:
    """Expand ``${VAR}`` and ``${VAR:-default}`` in every string of ``value`` (keys are left alone).

    A variable that is unset (and has no default) raises :class:`ConfigError` naming it and the key
    path. ``${VAR:-default}`` uses ``default`` when ``VAR`` is unset or empty; ``$${`` is a literal
    ``${``.
    """
    where = where or _Where("<config>", {})

    def expand_str(text: str, path: list[str | int]) -> str:
        def sub(m: re.Match[str]) -> str:
            if m.group(0) == "$${":
                return "${"
            body = m.group(1)
            parsed = _VAR_BODY.match(body)
            if parsed is None:
                raise where.error(
                    path,
                    f"malformed variable reference ${{{body}}}: write ${{NAME}} or "
                    "${NAME:-default} (NAME of letters, digits and _), or $${ for a literal ${",
                )
            name, default = parsed.group(1), parsed.group(2)
            val = env.get(name)
            if val is None or (val == "" and default is not None):
                if default is None:
                    raise where.error(
                        path,
                        f"environment variable {name} is not set; set it, or write "
                        f"${{{name}:-default}} to give a default",
                    )
                return default
            return val

        return _VAR.sub(sub, text)

    def walk(v: Any, path: list[str | int]) -> Any:
        if isinstance(v, str):
            return expand_str(v, path) if "$" in v else v
        if isinstance(v, dict):
            return {k: walk(item, [*path, str(k)]) for k, item in v.items()}
        if isinstance(v, list):
            return [walk(item, [*path, i]) for i, item in enumerate(v)]
        return v

    return walk(value, [])


# ------------------------------------------------------------------------------------------------
# parsing
# ------------------------------------------------------------------------------------------------
def parse_duration(text: str | float | int) -> float:
    """Seconds in a schedule such as ``30s``, ``15m``, ``1h``, ``6h``, ``1d``, ``1h30m`` or ``90``."""
    if isinstance(text, bool):
        raise ValueError("a duration is a number of seconds or text such as 15m, 1h, 6h")
    if isinstance(text, int | float):
        seconds = float(text)
    else:
        s = text.strip().replace(" ", "")
        try:
            seconds = float(s)
        except ValueError:
            pos = 0
            seconds = 0.0
            for m in _DURATION.finditer(s):
                if m.start() != pos:
                    break
                seconds += float(m.group(1)) * _DURATION_UNITS[m.group(2).lower()]
                pos = m.end()
            if pos != len(s) or not s:
                raise ValueError(
                    f"{text!r} is not a duration: write e.g. 30s, 15m, 1h, 6h, 1d or 1h30m"
                ) from None
    if seconds <= 0:
        raise ValueError(f"{text!r} is not a positive duration")
    return seconds


def _import_callable(target: Any, where: _Where, path: list[str | int]) -> Callable[..., Any]:
    if not isinstance(target, str) or ":" not in target:
        raise where.error(path, f"expected 'package.module:function', got {target!r}")
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise where.error(path, f"cannot import {module_name!r}: {exc}") from None
    fn: Any = module
    for part in attr.split("."):
        fn = getattr(fn, part, None)
        if fn is None:
            raise where.error(path, f"module {module_name!r} has no {attr!r}")
    if not callable(fn):
        raise where.error(path, f"{target!r} is not callable")
    return typing.cast(Callable[..., Any], fn)


class _TagOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tags: list[str] = Field(min_length=1)


class _ValidateOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_text_bytes: int | None = Field(None, ge=1)


class _DedupeOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_keys: int = Field(100_000, ge=1)


class _MapOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    function: str
    concurrency: int = Field(1, ge=1)
    ordered: bool = True
    threads: bool = False


class _FilterOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    function: str | None = None
    min_text_chars: int | None = Field(None, ge=0)
    tags_any: list[str] | None = None
    tags_none: list[str] | None = None
    source_types: list[str] | None = None


class _ChunkOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_tokens: int = Field(512, ge=1)
    overlap: int = Field(64, ge=0)

    @model_validator(mode="after")
    def _overlap_below_max(self) -> _ChunkOptions:
        if self.overlap >= self.max_tokens:
            raise ValueError(
                f"overlap ({self.overlap}) must be less than max_tokens ({self.max_tokens})"
            )
        return self


class _EmbedOptions(BaseModel):
    """The ``embed:`` stage: which embedder (see ``cfstream.embed.embedder_from_config``)."""

    model_config = ConfigDict(extra="forbid")
    provider: Literal["local", "openai", "sentence-transformers", "fastembed"] = "local"
    model: str | None = Field(None, min_length=1)
    base_url: str | None = Field(None, pattern=r"^https?://")
    api_key: Secret | None = None
    api_version: str | None = None
    dim: int | None = Field(None, ge=1)
    batch_size: int | None = Field(None, ge=1)
    concurrency: int | None = Field(None, ge=1)
    reembed: bool = False

    @model_validator(mode="after")
    def _fits_provider(self) -> _EmbedOptions:
        if self.provider != "openai":
            given = [k for k in ("base_url", "api_key", "api_version") if getattr(self, k)]
            if given:
                raise ValueError(
                    f"{', '.join(given)}: options of provider openai, not of {self.provider}"
                )
        if self.provider == "local" and self.dim not in (None, 64, 128, 256):
            raise ValueError("the local embedder's dim is 64, 128 or 256")
        return self


#: the package each optional embedding provider needs, and the extra that installs it
_PROVIDER_PACKAGES = {
    "sentence-transformers": ("sentence_transformers", "sentence-transformers"),
    "fastembed": ("fastembed", "fastembed"),
}


_STAGE_KINDS = ("tag", "validate", "dedupe", "map", "filter", "chunk", "embed")


def _declarative_filter(opts: _FilterOptions) -> Callable[[Any], bool]:
    min_chars = opts.min_text_chars
    any_tags = set(opts.tags_any or ())
    no_tags = set(opts.tags_none or ())
    types_ = set(opts.source_types or ())

    def keep(doc: Any) -> bool:
        if min_chars is not None and len(doc.text_content or "") < min_chars:
            return False
        tags = set(doc.tags or ())
        if any_tags and not (tags & any_tags):
            return False
        if no_tags and tags & no_tags:
            return False
        return not (types_ and doc.source_type not in types_)

    keep.__name__ = "config_filter"
    return keep


def _parse_stage(raw: Any, index: int, where: _Where) -> StageSpec:
    path: list[str | int] = ["pipeline", index]
    if not isinstance(raw, dict):
        raise where.error(path, f"expected a mapping such as {{tag: [kb]}}, got {raw!r}")
    kinds = [k for k in raw if k in _STAGE_KINDS]
    if len(kinds) != 1:
        raise where.error(
            path,
            f"expected exactly one stage key of {', '.join(_STAGE_KINDS)}; got {sorted(raw)}",
        )
    kind = kinds[0]
    value = raw[kind]
    extra = {k: v for k, v in raw.items() if k != kind}
    kpath = [*path, kind]
    try:
        if kind == "tag":
            if extra:
                raise where.error([*path, next(iter(extra))], "unknown key for a tag stage")
            tags = [value] if isinstance(value, str) else value
            tag_opts = _TagOptions.model_validate({"tags": tags})
            return StageSpec("tag", {"tags": tuple(tag_opts.tags)}, _join(kpath))
        if kind in ("validate", "dedupe"):
            model: type[BaseModel] = _ValidateOptions if kind == "validate" else _DedupeOptions
            if extra:
                raise where.error([*path, next(iter(extra))], f"unknown key for a {kind} stage")
            parsed = model.model_validate(value or {})
            return StageSpec(kind, parsed.model_dump(exclude_unset=True), _join(kpath))
        if kind == "chunk":
            if extra:
                raise where.error([*path, next(iter(extra))], "unknown key for a chunk stage")
            chunk_opts = _ChunkOptions.model_validate(value or {})
            return StageSpec("chunk", chunk_opts.model_dump(), _join(kpath))
        if kind == "embed":
            if extra:
                raise where.error([*path, next(iter(extra))], "unknown key for an embed stage")
            if value is not None and not isinstance(value, dict):
                raise where.error(
                    kpath, f"expected a mapping such as {{provider: local}}, got {value!r}"
                )
            try:
                e_opts = _EmbedOptions.model_validate(value or {})
            except ValidationError as exc:
                raise _translate(exc, where, kpath, _EmbedOptions, value or {}) from None
            needs = _PROVIDER_PACKAGES.get(e_opts.provider)
            if needs is not None and importlib.util.find_spec(needs[0]) is None:
                raise where.error(
                    [*kpath, "provider"],
                    f"provider {e_opts.provider} needs the {needs[1]!r} package, which is not "
                    f"installed: pip install 'cfstream[{needs[1]}]'",
                )
            return StageSpec("embed", e_opts.model_dump(), _join(kpath))
        if kind == "map":
            merged = (
                {"function": value, **extra}
                if isinstance(value, str)
                else {**(value or {}), **extra}
            )
            map_opts = _MapOptions.model_validate(merged)
            fn = _import_callable(map_opts.function, where, kpath)
            opts = map_opts.model_dump()
            opts["function"] = fn
            return StageSpec("map", opts, _join(kpath))
        # filter
        merged = (
            {"function": value, **extra} if isinstance(value, str) else {**(value or {}), **extra}
        )
        f_opts = _FilterOptions.model_validate(merged)
        if f_opts.function is not None:
            predicate = _import_callable(f_opts.function, where, kpath)
        elif f_opts.model_fields_set:
            predicate = _declarative_filter(f_opts)
        else:
            raise where.error(
                kpath,
                "a filter needs 'package.module:function' or one of min_text_chars, tags_any, "
                "tags_none, source_types",
            )
        return StageSpec("filter", {"predicate": predicate}, _join(kpath))
    except ValidationError as exc:
        raise _translate(exc, where, kpath, None) from None


def _resolve_local_paths(
    model: BaseModel, base_dir: Path | None, where: _Where, path: list[str | int]
) -> Any:
    """``model`` with its local path options (see ``path_option``) resolved against the config
    file's folder and checked to exist (nested settings such as ``credentials`` included)."""
    update: dict[str, Any] = {}
    if base_dir is None:  # not from a config file: paths stay as given
        return model
    for key, info in type(model).model_fields.items():
        value = getattr(model, key)
        if isinstance(value, BaseModel):
            resolved = _resolve_local_paths(value, base_dir, where, [*path, key])
            if resolved is not value:
                update[key] = resolved
            continue
        extra = info.json_schema_extra
        kind = extra.get("local_path") if isinstance(extra, dict) else None
        if kind is None or not isinstance(value, str) or not value:
            continue
        local = Path(value).expanduser()
        if not local.is_absolute():
            local = base_dir / local
        if kind == "dir" and not local.is_dir():
            what = "is not a folder" if local.exists() else "does not exist"
            raise where.error([*path, key], f"{value!r} ({local}) {what}: give an existing folder")
        if kind == "file" and not local.is_file():
            what = "is not a file" if local.exists() else "does not exist"
            raise where.error([*path, key], f"{value!r} ({local}) {what}: give an existing file")
        if str(local) != value:
            update[key] = str(local)
    return model.model_copy(update=update) if update else model


def _parse_source(
    name: str, raw: Mapping[str, Any], where: _Where, base_dir: Path | None = None
) -> SourceSpec:
    path: list[str | int] = ["sources", name]
    if not isinstance(raw, dict):
        raise where.error(path, "expected a mapping with at least `type:`")
    type_name = raw.get("type")
    if not isinstance(type_name, str) or not type_name:
        raise where.error(
            [*path, "type"] if "type" in raw else path,
            "missing required key 'type': a built-in connector (github, slack, ...), an installed "
            "plugin's name, or 'package.module:Class'",
        )
    try:
        cls = load_source_class(type_name)
    except ConfigError as exc:
        raise where.error([*path, "type"], str(exc)) from None
    if not (
        (isinstance(cls, type) and issubclass(cls, Source))
        or getattr(cls, "is_source_factory", False)
    ):
        raise where.error(
            [*path, "type"],
            f"{type_name!r} is {cls!r}: name a cfstream Source class or a function decorated "
            "with @cf.source",
        )
    enabled = raw.get("enabled", True)
    if isinstance(enabled, str) and enabled.strip().lower() in _BOOL_WORDS:  # from ${VAR}
        enabled = _BOOL_WORDS[enabled.strip().lower()]
    if not isinstance(enabled, bool):
        raise where.error([*path, "enabled"], f"expected true or false, got {enabled!r}")
    schedule_raw = raw.get("schedule")
    schedule: float | None = None
    if schedule_raw is not None:
        try:
            schedule = parse_duration(schedule_raw)
        except ValueError as exc:
            raise where.error([*path, "schedule"], str(exc)) from None
    max_conc = raw.get("max_concurrency")
    if max_conc is not None and (
        isinstance(max_conc, bool) or not isinstance(max_conc, int) or max_conc < 1
    ):
        raise where.error([*path, "max_concurrency"], f"expected an integer >= 1, got {max_conc!r}")
    options = {k: v for k, v in raw.items() if k not in COMMON_SOURCE_KEYS}
    model: type[SourceConfig] | None = getattr(cls, "config_model", None)
    secrets = _secret_fields(model)
    if model is not None:
        try:
            validated = model.model_validate(options)
        except ValidationError as exc:
            raise _translate(exc, where, path, model, options) from None
        validated = _resolve_local_paths(validated, base_dir, where, path)
        options = {k: getattr(validated, k) for k in validated.model_fields_set}
    return SourceSpec(
        name=name,
        type=type_name,
        cls=cls,
        options=options,
        enabled=enabled,
        schedule=schedule,
        schedule_text=None if schedule_raw is None else str(schedule_raw),
        max_concurrency=max_conc,
        secret_keys=secrets,
    )


def parse_config(
    data: Any,
    *,
    filename: str = "<config>",
    env: Mapping[str, str] | None = None,
    lines: Mapping[str, int] | None = None,
    base_dir: Path | None = None,
) -> Config:
    """Validate an already-parsed config (a dict in the ``sources:`` layout).

    ``env`` is used for ``${VAR}`` expansion (``{}`` when None: every variable must then have a
    default). ``lines`` maps key paths to line numbers for messages; ``base_dir`` (the config
    file's folder) anchors every relative local path (``dataset`` and the sources' folder and file
    options), which must then exist. Other layouts (ContextFrame's ``connectors:``) convert to this
    one and call this function.
    """
    where = _Where(filename, lines or {})
    if data is None:
        raise where.error([], "the config is empty: it needs at least `dataset:` and `sources:`")
    if not isinstance(data, dict):
        raise where.error([], f"expected a mapping at the top level, got {type(data).__name__}")
    if "connectors" in data and "sources" not in data:
        raise where.error(
            ["connectors"],
            "the ContextFrame `connectors:` layout is read by cfstream.connectors; write cfstream's "
            "own layout with `sources: {name: {type: ..., ...}}`",
        )
    data = expand_env(data, env or {}, where)
    names = data.get("sources")
    if isinstance(names, dict):
        for name in names:
            if isinstance(name, bool):
                raise where.error(
                    ["sources"],
                    f"a source name reads as the boolean {str(name).lower()}: YAML reads "
                    "unquoted no/off/false/yes/on/true as booleans; quote the name, e.g. "
                    '"no": or "on":',
                )
    try:
        top = ConfigFile.model_validate(data)
    except ValidationError as exc:
        raise _translate(exc, where, [], ConfigFile) from None
    stages = tuple(_parse_stage(raw, i, where) for i, raw in enumerate(top.pipeline))
    sources = {
        str(name): _parse_source(str(name), raw, where, base_dir)
        for name, raw in top.sources.items()
    }
    dataset = top.dataset
    local = local_path(dataset)
    if local is not None and base_dir is not None and not local.is_absolute():
        dataset = str((base_dir / local).resolve())
    if local is not None:
        _check_dataset_folder(Path(local_path(dataset) or local).expanduser(), where)
    return Config(
        dataset=dataset,
        sink=top.sink,
        stages=stages,
        sources=sources,
        path=None,
        lines=dict(lines or {}),
    )


def _check_dataset_folder(path: Path, where: _Where) -> None:
    """A local dataset must be a folder (or not exist yet) under folders, never under a file."""
    for p in (path, *path.parents):
        if p.exists():
            if not p.is_dir():
                what = "is a file" if p == path else f"is inside {p}, which is a file"
                raise where.error(
                    ["dataset"],
                    f"{path} {what}: a Lance dataset is a folder; point `dataset:` at a folder "
                    "that does not exist yet or holds a dataset (e.g. ./kb.lance)",
                )
            return


def read_config_text(path: str | Path) -> str:
    """The text of a config file, read no further than :data:`MAX_CONFIG_BYTES` (ConfigError)."""
    try:
        with Path(path).open("rb") as fh:
            raw = fh.read(MAX_CONFIG_BYTES + 1)
        if len(raw) > MAX_CONFIG_BYTES:
            raise ConfigError(
                f"{path}: the config file is larger than {MAX_CONFIG_BYTES:,} bytes; a "
                "cfstream config is a few kilobytes: check that this is the right file"
            )
        return raw.decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the config file: {exc}") from None


def load_config(path: str | Path, env: Mapping[str, str] | None = None) -> Config:
    """Read, expand and validate the config file at ``path``.

    ``env`` is the environment for ``${VAR}`` expansion; the CLI passes ``os.environ``. A relative
    local ``dataset`` is resolved against the config file's folder.
    """
    p = Path(path)
    filename = str(path)
    folder = str(p.resolve().parent)
    if folder not in sys.path:  # a source module beside the config imports as it would in a script
        sys.path.append(folder)
    data, lines = _load_yaml(read_config_text(p), filename)
    cfg = parse_config(data, filename=filename, env=env, lines=lines, base_dir=p.resolve().parent)
    return Config(
        dataset=cfg.dataset,
        sink=cfg.sink,
        stages=cfg.stages,
        sources=cfg.sources,
        path=p,
        lines=lines,
    )


# ------------------------------------------------------------------------------------------------
# building
# ------------------------------------------------------------------------------------------------
def select_sources(config: Config, only: Iterable[str] | None = None) -> list[SourceSpec]:
    """The sources to run: ``only`` (by name, even if disabled) or every enabled source."""
    if only is None:
        chosen = [s for s in config.sources.values() if s.enabled]
        if not chosen:
            raise ConfigError(
                "every source is disabled (enabled: false); enable one or name it with --source"
            )
        return chosen
    names = list(dict.fromkeys(only))
    unknown = [n for n in names if n not in config.sources]
    if unknown:
        raise ConfigError(
            f"unknown source {', '.join(map(repr, unknown))}: the config defines "
            f"{', '.join(config.sources)}"
        )
    return [config.sources[n] for n in names]


def build_source(spec: SourceSpec) -> Source:
    """Instantiate one source from its spec (no network)."""
    try:
        src: Source = spec.cls.from_config(dict(spec.options), name=spec.name)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"sources.{spec.name}: cannot build a {spec.type!r} source: {redact(str(exc))}"
        ) from exc
    if spec.max_concurrency is not None:
        src.max_concurrency = spec.max_concurrency
    src.config_key = f"sources.{spec.name}"  # messages name the YAML keys
    return src


def build_stages(config: Config) -> list[Stage]:
    """Fresh instances of the ``pipeline:`` stages, in order."""
    return [s.build() for s in config.stages]


def build_sink(config: Config, dataset: str | None = None) -> LanceSink:
    """The LanceSink of the config (``dataset`` overrides the config's)."""
    opts = config.sink.model_dump(exclude_unset=True)
    return LanceSink(dataset or config.dataset, **opts)


def build_pipeline(config: Config, only: Iterable[str] | None = None) -> Pipeline:
    """One pipeline reading the selected sources concurrently into the dataset."""
    sources = [build_source(s) for s in select_sources(config, only)]
    pipeline = Pipeline(sources, build_stages(config), build_sink(config))
    pipeline.dataset_sources = dataset_sources(config)
    return pipeline


def build_pipelines(config: Config, only: Iterable[str] | None = None) -> dict[str, Pipeline]:
    """One pipeline per selected source (for ``cfstream watch``), keyed by source name."""
    return {s.name: build_pipeline(config, [s.name]) for s in select_sources(config, only)}


def dataset_sources(config: Config) -> dict[str, str]:
    """Every source of the config, enabled or not, as name -> source type (see
    :attr:`~cfstream.engine.pipeline.Pipeline.dataset_sources`)."""
    return {name: spec.source_type for name, spec in config.sources.items()}
