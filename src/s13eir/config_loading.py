"""Loading a configuration: the YAML file (duplicate keys refused), ``S13EIR_*``
environment overrides, validation against the schema (``config``) with messages that
name the setting and the allowed values, the checks across sections, and relative paths
made absolute."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

import msgspec
import msgspec.inspect as mi
import yaml

from s13eir.config import ENV_PREFIX, Config, ConfigError

__all__ = ["config_from_mapping", "load_config"]


_CONFIG_TYPE = mi.type_info(Config)


# --- loading ------------------------------------------------------------------------------


def load_config(path: str | os.PathLike[str], environ: Mapping[str, str] | None = None) -> Config:
    """Read a YAML file, apply ``S13EIR_*`` overrides from ``environ`` (default ``os.environ``)
    and validate. Relative list paths are taken relative to the file's directory."""
    name = os.fspath(path)
    try:
        with open(name, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise ConfigError(name, "no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(name, f"cannot read: {exc}") from None
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass: no arbitrary objects
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = exc.problem or exc.context or "syntax error"
        raise ConfigError(name, f"invalid YAML{where}: {problem}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(name, f"invalid YAML: {exc}") from None
    if not isinstance(data, Mapping):
        got = "an empty document" if data is None else "a list" if isinstance(data, list) else f"{data!r:.60}"
        raise ConfigError(name, f"the top level must be a mapping of sections, got {got}")
    base_dir = os.path.dirname(os.path.abspath(name))
    return config_from_mapping(data, base_dir=base_dir, environ=os.environ if environ is None else environ, source=name)


def config_from_mapping(
    data: Mapping[str, Any],
    base_dir: str = ".",
    environ: Mapping[str, str] | None = None,
    *,
    source: str = "<config>",
) -> Config:
    """Validate an already-parsed configuration. Pure: ``environ`` None means no overrides
    (this never reads ``os.environ``); ``source`` names the origin in error messages."""
    raw = _thaw(data)
    overridden = _apply_env(raw, environ or {})
    try:
        config = msgspec.convert(raw, Config, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigError(source, _explain(str(exc), overridden)) from None
    _check(config, source)
    return _resolve_paths(config, base_dir)


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys, which PyYAML would silently let the last win
    (two ``peers:`` blocks would lose the first)."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue  # "<<: *defaults" keys may legitimately be overridden by explicit ones
        key = loader.construct_object(key_node)
        try:
            duplicate = key in seen
        except TypeError:  # a list or mapping used as a key
            raise yaml.constructor.ConstructorError(None, None, "unhashable key", key_node.start_mark) from None
        if duplicate:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    loader.flatten_mapping(node)
    return dict(loader.construct_pairs(node, deep=True))


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _thaw(value: Any) -> Any:
    """Deep copy into plain dicts and lists so overrides never touch the caller's data."""
    if isinstance(value, Mapping):
        return {k: _thaw(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_thaw(v) for v in value]
    return value


def _check(config: Config, source: str) -> None:
    """Rules that span fields, which the per-field schema cannot express."""
    if not config.listen:
        raise ConfigError(source, "listen: at least one address to listen on is required")
    first: dict[str, int] = {}
    for i, peer in enumerate(config.peers.list):
        # DiameterIdentity is an FQDN: compared without regard to case.
        key = peer.origin_host.lower()
        if key in first:
            raise ConfigError(
                source,
                f"peers.list[{i}].origin_host: {peer.origin_host!r} is already listed at peers.list[{first[key]}]",
            )
        first[key] = i


def _abs(base_dir: str, path: str | None) -> str | None:
    return None if path is None else os.path.normpath(os.path.join(base_dir, os.path.expanduser(path)))


def _resolve_paths(config: Config, base_dir: str) -> Config:
    """Relative file names in the configuration are relative to its directory."""
    replace = msgspec.structs.replace
    if config.diameter.dictionaries:
        dicts = tuple(p for p in (_abs(base_dir, d) for d in config.diameter.dictionaries) if p)
        config = replace(config, diameter=replace(config.diameter, dictionaries=dicts))
    if config.sbi is not None:
        sbi = config.sbi
        sbi = replace(
            sbi,
            certfile=_abs(base_dir, sbi.certfile),
            keyfile=_abs(base_dir, sbi.keyfile),
            cafile=_abs(base_dir, sbi.cafile),
            oauth2=replace(sbi.oauth2, key_file=_abs(base_dir, sbi.oauth2.key_file)),
            nrf=replace(sbi.nrf, cafile=_abs(base_dir, sbi.nrf.cafile)),
        )
        config = replace(config, sbi=sbi)
    if config.sync.mqtt is not None and config.sync.mqtt.cafile is not None:
        mqtt = replace(config.sync.mqtt, cafile=_abs(base_dir, config.sync.mqtt.cafile))
        config = replace(config, sync=replace(config.sync, mqtt=mqtt))
    if config.events is not None and config.events.cafile is not None:
        config = replace(config, events=replace(config.events, cafile=_abs(base_dir, config.events.cafile)))
    if config.sync.snapshots:
        snapshots = tuple(
            msgspec.structs.replace(src, path=os.path.normpath(os.path.join(base_dir, os.path.expanduser(src.path))))
            for src in config.sync.snapshots
        )
        config = msgspec.structs.replace(config, sync=msgspec.structs.replace(config.sync, snapshots=snapshots))
    if not config.store.lists:
        return config
    lists = tuple(
        msgspec.structs.replace(src, path=os.path.normpath(os.path.join(base_dir, os.path.expanduser(src.path))))
        for src in config.store.lists
    )
    return msgspec.structs.replace(config, store=msgspec.structs.replace(config.store, lists=lists))


# --- error messages -----------------------------------------------------------------------

_AT = re.compile(r" - at (\$\S*)$")
_STEP = re.compile(r"\.([^.\[]+)|\[(\d+)\]")


def _explain(message: str, overridden: Mapping[str, str]) -> str:
    """msgspec's message without backticks, plus the allowed values for an enum or an unknown
    key, plus the environment variable when the bad value came from one."""
    message = message.replace("`", "")
    m = _AT.search(message)
    loc = m.group(1) if m else "$"
    typ = _type_at(loc)
    extra = ""
    if message.startswith("Invalid enum value") and typ is not None:
        allowed = _allowed_values(typ)
        if allowed:
            extra = f" (expected one of: {', '.join(allowed)})"
    elif message.startswith("Object contains unknown field") and isinstance(typ, mi.StructType):
        extra = f" (expected one of: {', '.join(f.encode_name for f in typ.fields)})"
    for path, var in overridden.items():
        if _within(loc, path) or _within(path, loc):
            extra += f" (value from environment variable {var})"
            break
    return message + extra


def _within(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith((prefix + ".", prefix + "["))


def _type_at(loc: str) -> mi.Type | None:
    typ: mi.Type = _CONFIG_TYPE
    for name, _index in _STEP.findall(loc[1:]):
        typ = _unwrap(typ)
        if name and isinstance(typ, mi.StructType):
            field = next((f for f in typ.fields if f.encode_name == name), None)
            if field is None:
                return None
            typ = field.type
        elif not name and isinstance(typ, mi.ListType | mi.VarTupleType):
            typ = typ.item_type
        else:
            return None
    return _unwrap(typ)


def _allowed_values(typ: mi.Type) -> list[str]:
    if isinstance(typ, mi.LiteralType):
        return [str(v) for v in typ.values]
    if isinstance(typ, mi.EnumType):
        return [str(member.value) for member in typ.cls]
    return []


def _unwrap(typ: mi.Type) -> mi.Type:
    if isinstance(typ, mi.UnionType):
        for t in typ.types:
            if not isinstance(t, mi.NoneType):
                return t
    return typ


# --- environment overrides ----------------------------------------------------------------


def _apply_env(raw: dict[str, Any], environ: Mapping[str, str]) -> dict[str, str]:
    """Apply ``S13EIR_A__B__0__C=value`` variables to ``raw`` in place; returns the JSON path
    each variable set (``$.a.b[0].c``) so validation errors can name the variable."""
    found: list[tuple[list[str], str, str]] = []
    for var, value in environ.items():
        if var[: len(ENV_PREFIX)].upper() != ENV_PREFIX:
            continue
        segments = var[len(ENV_PREFIX) :].lower().split("__")
        if not all(segments):
            raise ConfigError(var, f"cannot read a setting name: expected {ENV_PREFIX}SECTION__KEY")
        found.append((segments, var, value))
    # Numeric order, so that list items 0, 1, ..., 10 are created in sequence, and a whole
    # section set by one variable before the variables that refine it.
    found.sort(key=lambda item: [(0, int(s), "") if s.isdigit() else (1, 0, s) for s in item[0]])
    return {_set(raw, segments, value, var): var for segments, var, value in found}


def _set(raw: dict[str, Any], segments: list[str], text: str, var: str) -> str:
    node: Any = raw
    typ: mi.Type = _CONFIG_TYPE
    loc = "$"
    dotted = ""
    for i, seg in enumerate(segments):
        last = i == len(segments) - 1
        typ = _unwrap(typ)
        if isinstance(typ, mi.StructType):
            dotted = f"{dotted}.{seg}" if dotted else seg
            field = next((f for f in typ.fields if f.encode_name == seg), None)
            if field is None:
                known = ", ".join(f.encode_name for f in typ.fields)
                raise ConfigError(var, f"no such setting {dotted!r} (expected one of: {known})")
            if not isinstance(node, dict):
                raise ConfigError(var, f"cannot set {dotted!r}: {loc} is not a mapping in the configuration")
            loc = f"{loc}.{seg}"
            if last:
                node[seg] = _parse(text, field.type)
                return loc
            if node.get(seg) is None:
                node[seg] = _default_raw(field)
            node = node[seg]
            typ = field.type
        elif isinstance(typ, mi.ListType | mi.VarTupleType):
            dotted = f"{dotted}.{seg}"
            if not seg.isdigit():
                raise ConfigError(var, f"{dotted!r}: {loc} is a list, expected an item number, got {seg!r}")
            if not isinstance(node, list):
                raise ConfigError(var, f"cannot set {dotted!r}: {loc} is not a list in the configuration")
            index = int(seg)
            if index > len(node):
                raise ConfigError(
                    var,
                    f"{loc} has {len(node)} item(s): item {index} can only be added after item {len(node)}",
                )
            loc = f"{loc}[{index}]"
            item_type = _unwrap(typ.item_type)
            value = _parse(text, item_type) if last else _empty(item_type)
            if index == len(node):
                node.append(value)
            elif last or node[index] is None:
                node[index] = value
            if last:
                return loc
            node = node[index]
            typ = item_type
        else:
            raise ConfigError(var, f"{dotted!r} is a single value, it has no setting {seg!r}")
    raise AssertionError("unreachable: segments is never empty")


def _parse(text: str, typ: mi.Type) -> Any:
    """YAML scalar or flow syntax (``true``, ``3870``, ``[a, b]``), except for a string-typed
    setting, whose text is taken as written so that ``no`` or ``0100`` stay strings."""
    typ = _unwrap(typ)
    if isinstance(typ, mi.StrType) or (
        isinstance(typ, mi.LiteralType | mi.EnumType) and all(isinstance(v, str) for v in _raw_values(typ))
    ):
        return text
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _raw_values(typ: mi.LiteralType | mi.EnumType) -> list[Any]:
    if isinstance(typ, mi.LiteralType):
        return list(typ.values)
    return [member.value for member in typ.cls]


def _default_raw(field: mi.Field) -> Any:
    """The field's default as plain data, so that overriding one list item keeps the others."""
    if field.default is not msgspec.NODEFAULT and field.default is not None:
        return _thaw(msgspec.to_builtins(field.default))
    if field.default is None:
        # An optional section that is off: setting one of its keys turns it on.
        return _empty(_unwrap(field.type))
    if field.default_factory is not msgspec.NODEFAULT:
        return _thaw(msgspec.to_builtins(field.default_factory()))
    return _empty(_unwrap(field.type))


def _empty(typ: mi.Type) -> Any:
    return [] if isinstance(typ, mi.ListType | mi.VarTupleType) else {}
