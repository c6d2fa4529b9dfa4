"""Configuration: built-in defaults < config.ini < environment < command-line flags.

`SCHEMA` is the single list of fixed keys: their parser, default and environment names all
come from it, and tests check that config.ini documents each one. Sections that hold names
(`[aliases]`, `[fallbacks]`, `[upstream:NAME]`, `[pool:NAME]`, `[pipe:NAME]`) are read by their own
functions. Any bad value raises `ConfigError` with one line naming the key, the value and what
is allowed; the CLI prints it and exits 2.
"""

import configparser
import ipaddress
import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit

from llmhub.redaction import public_url

__all__ = ["Config", "ConfigError", "UpstreamConfig", "PoolMember", "load_config", "redacted",
           "SCHEMA"]

UPSTREAM_KINDS = ("auto", "lmstudio", "openai", "llamacpp", "vllm", "anthropic", "mock")
SECRET_KEYS = {"api_key", "api_keys"}
NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class ConfigError(Exception):
    """A configuration value that cannot be used; str() is the one line to print."""


# --- value parsers: each takes the raw string and returns a value or raises ValueError -------

def _str(raw: str) -> str:
    return raw.strip()


def _ranged(convert: Callable, lo, hi, what: str) -> Callable[[str], Any]:
    def parse(raw: str):
        value = convert(raw.strip())
        if not lo <= value <= hi:
            raise ValueError
        return value
    parse.allowed = f"{what} from {lo:g} to {hi:g}"
    return parse


def _int(lo: int, hi: int) -> Callable[[str], int]:
    return _ranged(int, lo, hi, "a whole number")


def _float(lo: float, hi: float) -> Callable[[str], float]:
    return _ranged(float, lo, hi, "a number")


def _choice(*options: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip().lower()
        if value not in options:
            raise ValueError
        return value
    parse.allowed = "one of " + ", ".join(options)
    return parse


def _list(raw: str) -> tuple:
    return tuple(item.strip() for item in raw.split(",") if item.strip())


def _url(raw: str) -> str:
    value = raw.strip().rstrip("/")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError
    return value


def _bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError


_str.allowed = "text"
_list.allowed = "a comma-separated list"
_url.allowed = "an http:// or https:// URL"
_bool.allowed = "true or false"


@dataclass(frozen=True)
class Key:
    section: str
    name: str
    parse: Callable[[str], Any]
    default: str
    env: tuple = ()      # extra environment names from the seed documents


# A whole (non-streamed) upstream reply is read into memory, so it has a bound; this one fits
# OpenAI's largest embeddings call, 2,048 inputs of 3,072 dimensions, as pretty-printed JSON
# floats (LM Studio indents them): 6.3 M floats at up to ~36 bytes each is ~226 MiB.
DEFAULT_MAX_REPLY_BYTES = 256 << 20

SCHEMA = [
    Key("server", "host", _str, "127.0.0.1"),
    Key("server", "port", _int(0, 65535), "8000"),
    Key("server", "db_path", _str, "llmhub.db"),
    Key("server", "api_keys", _list, ""),
    Key("server", "allow_remote_without_keys", _bool, "false"),
    Key("server", "cors_origins", _list, "http://localhost:*, http://127.0.0.1:*, "
        "http://[::1]:*, chrome-extension://*, moz-extension://*, safari-web-extension://*",
        env=("CORS_ORIGINS",)),
    Key("server", "allowed_hosts", _list, ""),
    Key("server", "max_body_bytes", _int(1024, 1 << 30), "16777216"),
    Key("server", "max_image_bytes", _int(1024, 1 << 30), "10485760"),
    Key("server", "max_messages", _int(1, 10_000_000), "1000"),
    Key("server", "max_connections", _int(1, 1_000_000), "2000"),
    Key("server", "max_connections_per_client", _int(1, 1_000_000), "256"),
    Key("server", "ping_interval_seconds", _float(0.05, 3600), "10"),
    Key("server", "read_timeout_seconds", _float(1, 86400), "60"),
    Key("server", "head_timeout_seconds", _float(0.5, 3600), "10"),
    Key("server", "body_timeout_seconds", _float(0.1, 3600), "10"),
    Key("server", "keepalive_timeout_seconds", _float(0.1, 3600), "5"),
    Key("server", "stream_buffer_bytes", _int(4096, 1 << 30), "1048576"),
    Key("server", "log_level", _choice("debug", "info", "warning", "error"), "info"),
    Key("server", "log_format", _choice("json", "text"), "json"),
    Key("upstream", "kind", _choice(*UPSTREAM_KINDS), "auto"),
    Key("upstream", "base_url", _url, "http://localhost:1234/v1", env=("OPENAI_BASE_URL",)),
    Key("upstream", "api_key", _str, "", env=("OPENAI_API_KEY",)),
    Key("upstream", "connect_timeout_seconds", _float(0.1, 3600), "5"),
    Key("upstream", "first_byte_timeout_seconds", _float(0.1, 86400), "600"),
    Key("upstream", "idle_timeout_seconds", _float(0.1, 86400), "120"),
    Key("upstream", "total_timeout_seconds", _float(0.1, 604800), "3600"),
    Key("upstream", "max_concurrent", _int(0, 10000), "0"),
    Key("upstream", "max_queued", _int(0, 1_000_000), "0"),
    Key("upstream", "load_timeout_seconds", _float(1, 86400), "600"),
    Key("upstream", "max_event_bytes", _int(1024, 1 << 30), "8388608"),
    Key("upstream", "max_reply_bytes", _int(65536, 1 << 34), str(DEFAULT_MAX_REPLY_BYTES)),
    Key("upstream", "load_on_demand", _bool, "true"),
    Key("upstream", "load_context_length", _int(0, 100_000_000), "0"),
    Key("upstream", "idle_unload_seconds", _float(0, 31_536_000), "0"),
    Key("health", "interval_seconds", _float(0, 86400), "10"),
    Key("health", "timeout_seconds", _float(0.1, 600), "2"),
    Key("health", "failures", _int(1, 1000), "3"),
    Key("health", "cooldown_seconds", _float(0, 86400), "30"),
    Key("routing", "discover", _bool, "false"),
    Key("routing", "retries", _int(0, 100), "2"),
    Key("routing", "affinity_seconds", _float(0, 31_536_000), "1800"),
    Key("routing", "affinity_max", _int(0, 100_000_000), "10000"),
    Key("models", "default", _str, ""),
    Key("models", "regular", _str, "qwen/qwen3-4b-2507", env=("DEFAULT_REGULAR_MODEL",)),
    Key("models", "vision", _str, "qwen3-vl-4b-instruct", env=("DEFAULT_VISION_MODEL",)),
    Key("models", "summary", _str, ""),
    Key("models", "think_tags", _list, ""),
    Key("models", "think_inline", _list, ""),
    Key("context", "max_input_tokens", _int(256, 10_000_000), "8192",
        env=("CTX_MAX_INPUT_TOKENS",)),
    Key("context", "summary_trigger_tokens", _int(256, 10_000_000), "6144",
        env=("SUMMARY_TRIGGER_TOKENS",)),
    Key("context", "keep_recent_tokens", _int(0, 10_000_000), "2048"),
    Key("context", "replay_reasoning", _bool, "false"),
    Key("responses", "keep_count", _int(1, 100_000_000), "1000"),
    Key("responses", "keep_days", _float(0.001, 36500), "7"),
    Key("responses", "resume_grace_seconds", _float(0, 3600), "15"),
    Key("responses", "max_event_log_bytes", _int(4096, 1 << 34), "8388608"),
    Key("mock", "chunk_delay_seconds", _float(0, 60), "0.2"),
    Key("mock", "min_chunks", _int(1, 10000), "5"),
    Key("mock", "max_chunks", _int(1, 10000), "10"),
    Key("providers", "allowed", _list, ""),
    Key("providers", "anthropic", _list, ""),
    Key("retention", "sweep_interval_seconds", _float(0, 31_536_000), "3600"),
    Key("retention", "threads_keep_days", _float(0, 36500), "365"),
    Key("retention", "threads_max_mb", _float(0, 1 << 30), "4096"),
    Key("retention", "responses_max_mb", _float(0, 1 << 30), "256"),
    Key("retention", "api_responses_max_mb", _float(0, 1 << 30), "1024"),
    Key("retention", "requests_max_mb", _float(0, 1 << 30), "256"),
    Key("log", "keep_count", _int(0, 10_000_000), "10000"),
    Key("log", "keep_days", _float(0, 3650), "30"),
    Key("log", "capture_bodies", _bool, "false"),
    Key("log", "max_body_bytes", _int(0, 1 << 30), "65536"),
    Key("openai", "drop_fields", _list, ""),
    Key("anthropic", "strip_billing_header", _bool, "true"),
    Key("anthropic", "store", _bool, "false"),
    Key("ollama", "port", _int(0, 65535), "0"),
    Key("ollama", "version", _str, "0.13.0"),
    Key("ollama", "tools", _list, ""),
    Key("ollama", "thinking", _list, ""),
    Key("ollama", "vision", _list, ""),
]
UPSTREAM_KEYS = {k.name: k for k in SCHEMA if k.section == "upstream"}
PIPE_KEYS = ("model", "system", "temperature", "max_tokens", "variables")


def env_name(key: Key) -> str:
    return f"LLMHUB_{key.section}_{key.name}".upper()


# --- the frozen result -----------------------------------------------------------------------

@dataclass(frozen=True)
class UpstreamConfig:
    name: str
    kind: str
    base_url: str
    api_key: str
    connect_timeout_seconds: float
    first_byte_timeout_seconds: float
    idle_timeout_seconds: float
    total_timeout_seconds: float
    max_concurrent: int
    load_timeout_seconds: float
    max_event_bytes: int
    max_reply_bytes: int = DEFAULT_MAX_REPLY_BYTES
    max_queued: int = 0
    load_on_demand: bool = True
    load_context_length: int = 0
    idle_unload_seconds: float = 0.0


@dataclass(frozen=True)
class PoolMember:
    """One target of a `[pool:NAME]`: an upstream's model, its weight and tier."""
    upstream: str
    model: str
    weight: float = 1.0        # share of the traffic, relative to the pool's others
    tier: int = 1              # lower first: a higher tier is used only when these are not
    max_concurrent: int = 0    # this target's capacity; 0: the upstream's, or what it reports


@dataclass(frozen=True)
class KeyLimits:
    """What one named key is and may do ([key:NAME]); empty and 0 mean no limit. Every
    named key has one, with these defaults where its section (if any) is silent."""
    role: str = "user"             # user: its own work only; admin: everyone's
    routes: tuple = ()             # path patterns (/v1/threads*)
    methods: tuple = ()            # GET, POST, …
    models: tuple = ()             # model name patterns (qwen*)
    manage_models: bool = False    # may load and unload (the models it may use); admins may
    requests_per_minute: int = 0
    tokens_per_day: int = 0
    max_concurrent: int = 8        # its runs at once: one key never takes every slot
    max_background: int = 4        # its background runs queued or running at once

    @property
    def admin(self) -> bool:
        return self.role == "admin"


KEY_LIMIT_KEYS = {"role": _choice("user", "admin"), "routes": _list, "methods": _list,
                  "models": _list, "manage_models": _bool,
                  "requests_per_minute": _int(0, 1_000_000),
                  "tokens_per_day": _int(0, 1 << 40), "max_concurrent": _int(0, 100_000),
                  "max_background": _int(0, 100_000)}


@dataclass(frozen=True)
class PipeConfig:
    name: str
    model: str = ""
    system: str = ""
    temperature: float | None = None
    max_tokens: int | None = None
    variables: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Config:
    server: dict
    upstreams: tuple          # of UpstreamConfig; the first is the default upstream
    models: dict
    context: dict
    responses: dict
    mock: dict
    providers: dict
    anthropic: dict = field(default_factory=lambda: {"strip_billing_header": True,
                                                     "store": False})
    openai: dict = field(default_factory=lambda: {"drop_fields": ()})
    ollama: dict = field(default_factory=lambda: {"port": 0, "version": "0.13.0", "tools": (),
                                                  "thinking": (), "vision": ()})
    keys: dict = field(default_factory=dict)      # key name → key ([keys], or name:key)
    log: dict = field(default_factory=lambda: {"keep_count": 10000, "keep_days": 30.0,
                                               "capture_bodies": False,
                                               "max_body_bytes": 65536})
    retention: dict = field(default_factory=lambda: {
        "sweep_interval_seconds": 0.0, "threads_keep_days": 0.0, "threads_max_mb": 0.0,
        "responses_max_mb": 0.0, "api_responses_max_mb": 0.0, "requests_max_mb": 0.0})
    key_limits: dict = field(default_factory=dict)   # key name → KeyLimits
    aliases: dict = field(default_factory=dict)
    fallbacks: dict = field(default_factory=dict)
    concurrency: dict = field(default_factory=dict)   # model → max_concurrent
    pipes: dict = field(default_factory=dict)
    pools: dict = field(default_factory=dict)         # name → tuple of PoolMember
    health: dict = field(default_factory=lambda: {"interval_seconds": 0.0,
                                                  "timeout_seconds": 2.0, "failures": 3,
                                                  "cooldown_seconds": 30.0})
    routing: dict = field(default_factory=lambda: {"discover": False, "retries": 2,
                                                   "affinity_seconds": 1800.0,
                                                   "affinity_max": 10000})
    source: str = ""          # the config file read, if any

    @property
    def upstream(self) -> UpstreamConfig:
        return self.upstreams[0]


# --- loading ---------------------------------------------------------------------------------

def load_config(flags: dict | None = None, env: dict | None = None,
                path: str | Path | None = None) -> Config:
    """Build the effective Config. `path=None` reads ./config.ini when it exists."""
    flags = {k: v for k, v in (flags or {}).items() if v is not None}
    env = os.environ if env is None else env
    parser, source = _read_file(path)
    raw = {(k.section, k.name): (k.default, "default") for k in SCHEMA}
    _check_sections(parser)
    for key in SCHEMA:
        if parser.has_option(key.section, key.name):
            raw[key.section, key.name] = (parser.get(key.section, key.name), source)
    for key in SCHEMA:
        for name in (*key.env, env_name(key)):      # LLMHUB_* wins over the seed names
            if name in env:
                raw[key.section, key.name] = (env[name], f"environment {name}")
    for (section, name), value in _flag_values(flags).items():
        raw[section, name] = (value, f"flag --{_FLAG_OF.get((section, name), name)}")
    values = {(s, n): _parse(s, n, *raw[s, n]) for (s, n) in raw}
    sections = {}
    for (section, name), value in values.items():
        sections.setdefault(section, {})[name] = value
    keys = _keys(parser, sections["server"]["api_keys"])
    sections["server"]["api_keys"] = tuple(keys.values())   # the secrets alone, as before
    upstreams = _upstreams(parser, sections["upstream"], source)
    config = Config(
        server=sections["server"], keys=keys, upstreams=upstreams,
        pools=_pools(parser, {u.name for u in upstreams}, source),
        models=sections["models"], context=sections["context"],
        responses=sections["responses"], mock=sections["mock"],
        providers=sections["providers"], anthropic=sections["anthropic"],
        openai=sections["openai"], ollama=sections["ollama"], log=sections["log"],
        retention=sections["retention"],
        aliases=_aliases(parser), fallbacks=_fallbacks(parser),
        concurrency=_concurrency(parser, source), pipes=_pipes(parser, source),
        key_limits=_key_limits(parser, keys, source),
        health=sections["health"], routing=sections["routing"],
        source=source,
    )
    _validate(config)
    return config


_FLAG_OF = {("server", "db_path"): "db", ("upstream", "base_url"): "upstream",
            ("upstream", "kind"): "kind",
            ("server", "allow_remote_without_keys"): "insecure"}


def _flag_values(flags: dict) -> dict:
    out = {}
    for name in ("host", "port", "log_level", "log_format"):
        if name in flags:
            out["server", name] = str(flags[name])
    if "db" in flags:
        out["server", "db_path"] = str(flags["db"])
    if flags.get("insecure"):
        out["server", "allow_remote_without_keys"] = "true"
    if "kind" in flags:
        out["upstream", "kind"] = str(flags["kind"])
    if "upstream" in flags:
        if flags["upstream"] == "mock":
            out["upstream", "kind"] = "mock"
        else:
            out["upstream", "base_url"] = flags["upstream"]
    return out


def _read_file(path) -> tuple[configparser.ConfigParser, str]:
    parser = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=(";", "#"))
    parser.optionxform = str          # alias and model names keep their case
    if path is None:
        path = Path("config.ini")
        if not path.is_file():
            return parser, ""
    path = Path(path)
    try:
        # utf-8-sig: Notepad and PowerShell write a BOM
        parser.read_string(path.read_text(encoding="utf-8-sig"), source=str(path))
    except OSError as exc:
        raise ConfigError(f"config file {path}: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, configparser.Error) as exc:
        raise ConfigError(f"config file {path}: {str(exc).splitlines()[0]}") from None
    return parser, str(path)


def _check_sections(parser) -> None:
    fixed = {k.section for k in SCHEMA}
    for section in parser.sections():
        if section.startswith(("upstream:", "pool:", "pipe:", "key:")) or section in (
                "aliases", "fallbacks", "concurrency", "keys"):
            continue
        if section not in fixed:
            raise ConfigError(f"[{section}]: unknown section (known: "
                              f"{', '.join(sorted(fixed | {'aliases', 'fallbacks'}))}, "
                              "upstream:NAME, pool:NAME, pipe:NAME, key:NAME)")
        known = [k.name for k in SCHEMA if k.section == section]
        for name in parser.options(section):
            if name not in known:
                raise ConfigError(f"[{section}] {name}: unknown key (known: {', '.join(known)})")


def _parse(section: str, name: str, raw: str, source: str):
    parse = next(k.parse for k in SCHEMA if (k.section, k.name) == (section, name))
    try:
        return parse(raw)
    except ValueError:
        raise ConfigError(f"[{section}] {name} = {raw!r} (from {source}): "
                          f"expected {parse.allowed}") from None


def _named(parser, kind: str):
    """(section, NAME) of each [kind:NAME] section, in file order."""
    for section in parser.sections():
        if section.startswith(kind + ":"):
            yield section, section.split(":", 1)[1].strip()


def _upstreams(parser, default: dict, source: str) -> tuple:
    upstreams = [UpstreamConfig(name="default", **default)]
    for section, name in _named(parser, "upstream"):
        if not NAME_RE.match(name) or name == "default":
            raise ConfigError(f"[{section}]: upstream names are letters, digits, '_', '.', '-' "
                              "and not 'default'")
        values = dict(default)
        for key, raw in parser.items(section):
            if key not in UPSTREAM_KEYS:
                raise ConfigError(f"[{section}] {key}: unknown key "
                                  f"(known: {', '.join(UPSTREAM_KEYS)})")
            values[key] = _parse("upstream", key, raw, source)
        upstreams.append(UpstreamConfig(name=name, **values))
    return tuple(upstreams)


def _pools(parser, upstreams: set, source: str) -> dict:
    """`[pool:NAME] targets = gpu:qwen3-8b weight=2, laptop:qwen3-8b tier=2`."""
    pools = {}
    for section, name in _named(parser, "pool"):
        unknown = set(parser.options(section)) - {"targets"}
        if not name or unknown:
            raise ConfigError(f"[{section}]: a pool needs a name and has one key, targets")
        members = tuple(_pool_member(section, raw, upstreams, source)
                        for raw in _list(parser.get(section, "targets", fallback="")))
        if not members:
            raise ConfigError(f"[{section}] targets: expected UPSTREAM:model, ... "
                              f"(from {source})")
        pools[name] = members
    return pools


MEMBER_OPTIONS = {"weight": _float(0.001, 1000), "tier": _int(1, 100),
                  "max_concurrent": _int(0, 10000)}


def _pool_member(section: str, raw: str, upstreams: set, source: str) -> PoolMember:
    target, *options = raw.split()
    upstream, sep, model = target.partition(":")
    if not sep or upstream not in upstreams or not model:
        raise ConfigError(f"[{section}] targets: {target!r} (from {source}): expected "
                          f"UPSTREAM:model with UPSTREAM one of {', '.join(sorted(upstreams))}")
    values = {}
    for option in options:
        key, _, value = option.partition("=")
        if key not in MEMBER_OPTIONS:
            raise ConfigError(f"[{section}] targets: {option!r} (from {source}): expected "
                              f"{', '.join(k + '=N' for k in MEMBER_OPTIONS)}")
        try:
            values[key] = MEMBER_OPTIONS[key](value)
        except ValueError:
            raise ConfigError(f"[{section}] targets: {option!r} (from {source}): expected "
                              f"{MEMBER_OPTIONS[key].allowed}") from None
    return PoolMember(upstream, model, **values)


def _keys(parser, listed: tuple) -> dict:
    """Every API key by its name: `[keys] name = key`, `name:key` in api_keys, or a plain
    key in api_keys, named key1, key2, … by its place. Names show in logs; keys never do."""
    keys = {}
    for i, entry in enumerate(listed, 1):
        name, sep, key = entry.partition(":")
        if not sep or not NAME_RE.match(name):
            name, key = f"key{i}", entry
        keys[name] = key
    if parser.has_section("keys"):
        for name, key in parser.items("keys"):
            if not NAME_RE.match(name) or not key.strip():
                raise ConfigError(f"[keys] {name}: a key name is letters, digits, '_', '.', "
                                  "'-', and it needs a key")
            keys[name] = key.strip()
    if len(set(keys.values())) < len(keys):
        raise ConfigError("[keys]: two names share one key; give each client its own")
    return keys


def _key_limits(parser, keys: dict, source: str) -> dict:
    limits = dict.fromkeys(keys, KeyLimits())      # the defaults, for a key with no section
    for section, name in _named(parser, "key"):
        if name not in keys:
            raise ConfigError(f"[{section}]: no key is named {name!r} (named: "
                              f"{', '.join(keys) or 'none'})")
        values = {}
        for option, raw in parser.items(section):
            parse = KEY_LIMIT_KEYS.get(option)
            if parse is None:
                raise ConfigError(f"[{section}] {option}: unknown key (known: "
                                  f"{', '.join(KEY_LIMIT_KEYS)})")
            try:
                values[option] = parse(raw)
            except ValueError:
                raise ConfigError(f"[{section}] {option} = {raw!r} (from {source}): expected "
                                  f"{parse.allowed}") from None
        if "methods" in values:
            values["methods"] = tuple(m.upper() for m in values["methods"])
        limits[name] = KeyLimits(**values)
    return limits


def _aliases(parser) -> dict:
    if not parser.has_section("aliases"):
        return {}
    aliases = {name: value.strip() for name, value in parser.items("aliases")}
    for name in aliases:
        seen, current = [name], aliases[name]
        while current in aliases:
            if current in seen:
                raise ConfigError(f"[aliases] {name}: cycle {' -> '.join(seen + [current])}")
            seen.append(current)
            current = aliases[current]
    return aliases


def _fallbacks(parser) -> dict:
    if not parser.has_section("fallbacks"):
        return {}
    return {name: _list(value) for name, value in parser.items("fallbacks")}


def _concurrency(parser, source: str) -> dict:
    if not parser.has_section("concurrency"):
        return {}
    limits = {}
    for model, raw in parser.items("concurrency"):
        try:
            limits[model] = _int(1, 10000)(raw)
        except ValueError:
            raise ConfigError(f"[concurrency] {model} = {raw!r} (from {source}): expected a "
                              "whole number from 1 to 10000") from None
    return limits


def _pipes(parser, source: str) -> dict:
    pipes = {}
    for section, name in _named(parser, "pipe"):
        values = {}
        for key, raw in parser.items(section):
            if key not in PIPE_KEYS:
                raise ConfigError(f"[{section}] {key}: unknown key (known: {', '.join(PIPE_KEYS)})")
            values[key] = raw.strip()
        try:
            pipes[name] = PipeConfig(
                name=name, model=values.get("model", ""), system=values.get("system", ""),
                temperature=_float(0, 2)(values["temperature"]) if "temperature" in values else None,
                max_tokens=_int(-1, 10_000_000)(values["max_tokens"]) if "max_tokens" in values else None,
                variables=_variables(values.get("variables", "")),
            )
        except ValueError:
            raise ConfigError(f"[{section}]: temperature must be a number from 0 to 2, "
                              "max_tokens a whole number, variables name=value pairs "
                              f"separated by commas (from {source})") from None
    return pipes


def _variables(raw: str) -> dict:
    out = {}
    for pair in _list(raw):
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise ValueError
        out[name.strip()] = value.strip()
    return out


def _validate(config: Config) -> None:
    mock = config.mock
    if mock["min_chunks"] > mock["max_chunks"]:
        raise ConfigError(f"[mock] min_chunks = {mock['min_chunks']} is above max_chunks = "
                          f"{mock['max_chunks']}: expected min_chunks <= max_chunks")
    server = config.server
    if not _is_loopback(server["host"]) and not server["api_keys"] \
            and not server["allow_remote_without_keys"]:
        raise ConfigError(f"[server] host = {server['host']!r}: binding beyond loopback needs "
                          "api_keys (or --insecure, or allow_remote_without_keys = true)")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def redacted(config: Config) -> dict:
    """The effective configuration as JSON, with every secret replaced."""
    def hide(name, value):
        if name in SECRET_KEYS and value:
            return "***" if isinstance(value, str) else ["***"] * len(value)
        return list(value) if isinstance(value, tuple) else value

    def section(values: dict) -> dict:
        return {name: hide(name, value) for name, value in values.items()}

    return {
        "source": config.source or None,
        "server": section(config.server),
        "upstreams": [section({f.name: public_url(getattr(u, f.name)) if f.name == "base_url"
                               else getattr(u, f.name) for f in fields(u)})
                      for u in config.upstreams],
        "models": dict(config.models), "context": dict(config.context),
        "responses": dict(config.responses),
        "mock": dict(config.mock), "providers": section(config.providers),
        "anthropic": dict(config.anthropic),
        "openai": {"drop_fields": list(config.openai["drop_fields"])},
        "ollama": {k: list(v) if isinstance(v, tuple) else v for k, v in config.ollama.items()},
        "log": dict(config.log),
        "keys": {name: "***" for name in config.keys},
        "aliases": dict(config.aliases),
        "fallbacks": {k: list(v) for k, v in config.fallbacks.items()},
        "concurrency": dict(config.concurrency),
        "health": dict(config.health), "routing": dict(config.routing),
        "pools": {name: [{f.name: getattr(m, f.name) for f in fields(m)} for m in members]
                  for name, members in config.pools.items()},
        "pipes": {name: {f.name: getattr(p, f.name) for f in fields(p) if f.name != "name"}
                  for name, p in config.pipes.items()},
    }
