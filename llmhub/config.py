"""Configuration: built-in defaults < config.ini < environment < command-line flags.

The schema is one typed dataclass per fixed section (`ServerConfig` for `[server]`, …), each
field declared with `setting(parser, default)`: its type is what code reads
(`config.server.port` is an int, and mypy checks the name), its metadata the parser, the
default as config.ini spells it and any extra environment names. `SCHEMA`, the environment
names, validation, redaction and the unknown-key errors all derive from those classes, and
tests check that config.ini documents each key. Sections that hold names (`[aliases]`,
`[fallbacks]`, `[concurrency]`, `[keys]`, `[upstream:NAME]`, `[pool:NAME]`, `[pipe:NAME]`,
`[key:NAME]`) are read by their own functions. Any bad value raises `ConfigError` with one line
naming the key, the value and what is allowed; the CLI prints it and exits 2.
"""

import configparser
import ipaddress
import os
import re
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable, Generic, Iterator, Mapping, TypeVar
from urllib.parse import urlsplit

from llmhub.redaction import public_url

__all__ = ["Config", "ConfigError", "UpstreamConfig", "PoolMember", "load_config", "redacted",
           "SCHEMA", "SECTIONS", "CONFIG_ENV", "search_paths"]

UPSTREAM_KINDS = ("auto", "lmstudio", "openai", "llamacpp", "vllm", "anthropic", "mock")
SECRET_KEYS = {"api_key", "api_keys"}
NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
CONFIG_ENV = "LLMHUB_CONFIG"     # the config file, when --config names none
PROJECT_ROOT = Path(__file__).resolve().parent.parent    # main.py's folder, config.ini's home
T = TypeVar("T")
N = TypeVar("N", int, float)


class ConfigError(Exception):
    """A configuration value that cannot be used; str() is the one line to print."""


# --- value parsers: each takes the raw string and returns a value or raises ValueError -------

class Parser(Generic[T]):
    """A raw string's parser, with the phrase an error shows for what it accepts."""

    def __init__(self, parse: Callable[[str], T], allowed: str) -> None:
        self.parse, self.allowed = parse, allowed

    def __call__(self, raw: str) -> T:
        return self.parse(raw)


def allowing(allowed: str) -> Callable[[Callable[[str], T]], Parser[T]]:
    """Decorate a plain parser with what it allows."""
    return lambda parse: Parser(parse, allowed)


@allowing("text")
def _str(raw: str) -> str:
    return raw.strip()


def _ranged(convert: Callable[[str], N], lo: N, hi: N, what: str) -> Parser[N]:
    def parse(raw: str) -> N:
        value = convert(raw.strip())
        if not lo <= value <= hi:
            raise ValueError
        return value
    return Parser(parse, f"{what} from {lo:g} to {hi:g}")


def _int(lo: int, hi: int) -> Parser[int]:
    return _ranged(int, lo, hi, "a whole number")


def _float(lo: float, hi: float) -> Parser[float]:
    return _ranged(float, lo, hi, "a number")


def _choice(*options: str) -> Parser[str]:
    def parse(raw: str) -> str:
        value = raw.strip().lower()
        if value not in options:
            raise ValueError
        return value
    return Parser(parse, "one of " + ", ".join(options))


@allowing("a comma-separated list")
def _list(raw: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in raw.split(",") if item.strip())


@allowing("an http:// or https:// URL")
def _url(raw: str) -> str:
    value = raw.strip().rstrip("/")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError
    return value


@allowing("true or false")
def _bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError


# --- the schema: one frozen dataclass per fixed section ----------------------------------------

def setting(parse: Parser[T], default: str, env: tuple[str, ...] = ()) -> T:
    """One key of a section. To mypy it is a default of the parser's type, so the field's
    annotation must match what the parser returns; at run time it is a dataclass field
    whose metadata is the key's schema: its parser, its default as config.ini spells it
    (tests check the file documents it) and extra environment names from the seed documents."""
    return field(default=parse(default), metadata={"parse": parse, "default": default,
                                                   "env": env})


# A whole (non-streamed) upstream reply is read into memory, so it has a bound; this one fits
# OpenAI's largest embeddings call, 2,048 inputs of 3,072 dimensions, as pretty-printed JSON
# floats (LM Studio indents them): 6.3 M floats at up to ~36 bytes each is ~226 MiB.
DEFAULT_MAX_REPLY_BYTES = 256 << 20


@dataclass(frozen=True)
class ServerConfig:
    host: str = setting(_str, "127.0.0.1")
    port: int = setting(_int(0, 65535), "8000")
    db_path: str = setting(_str, "llmhub.db")
    api_keys: tuple[str, ...] = setting(_list, "")   # once loaded: every key's secret ([keys] too)
    allow_remote_without_keys: bool = setting(_bool, "false")
    cors_origins: tuple[str, ...] = setting(
        _list, "http://localhost:*, http://127.0.0.1:*, http://[::1]:*, chrome-extension://*, "
        "moz-extension://*, safari-web-extension://*", env=("CORS_ORIGINS",))
    allowed_hosts: tuple[str, ...] = setting(_list, "")
    max_body_bytes: int = setting(_int(1024, 1 << 30), "16777216")
    max_image_bytes: int = setting(_int(1024, 1 << 30), "10485760")
    max_messages: int = setting(_int(1, 10_000_000), "1000")
    max_connections: int = setting(_int(1, 1_000_000), "2000")
    max_connections_per_client: int = setting(_int(1, 1_000_000), "256")
    ping_interval_seconds: float = setting(_float(0.05, 3600), "10")
    read_timeout_seconds: float = setting(_float(1, 86400), "60")
    head_timeout_seconds: float = setting(_float(0.5, 3600), "10")
    body_timeout_seconds: float = setting(_float(0.1, 3600), "10")
    keepalive_timeout_seconds: float = setting(_float(0.1, 3600), "5")
    stream_buffer_bytes: int = setting(_int(4096, 1 << 30), "1048576")
    resumable_streams: bool = setting(_bool, "false")
    log_level: str = setting(_choice("debug", "info", "warning", "error"), "info")
    log_format: str = setting(_choice("json", "text"), "json")


@dataclass(frozen=True)
class UpstreamConfig:
    """`[upstream]` (named "default") and each `[upstream:NAME]`, which starts from it."""
    name: str
    kind: str = setting(_choice(*UPSTREAM_KINDS), "auto")
    base_url: str = setting(_url, "http://localhost:1234/v1", env=("OPENAI_BASE_URL",))
    api_key: str = setting(_str, "", env=("OPENAI_API_KEY",))
    connect_timeout_seconds: float = setting(_float(0.1, 3600), "5")
    first_byte_timeout_seconds: float = setting(_float(0.1, 86400), "600")
    idle_timeout_seconds: float = setting(_float(0.1, 86400), "120")
    total_timeout_seconds: float = setting(_float(0.1, 604800), "3600")
    max_concurrent: int = setting(_int(0, 10000), "0")
    load_timeout_seconds: float = setting(_float(1, 86400), "600")
    max_event_bytes: int = setting(_int(1024, 1 << 30), "8388608")
    max_reply_bytes: int = setting(_int(65536, 1 << 34), str(DEFAULT_MAX_REPLY_BYTES))
    max_queued: int = setting(_int(0, 1_000_000), "0")
    load_on_demand: bool = setting(_bool, "true")
    load_context_length: int = setting(_int(0, 100_000_000), "0")
    idle_unload_seconds: float = setting(_float(0, 31_536_000), "0")


@dataclass(frozen=True)
class HealthConfig:
    interval_seconds: float = setting(_float(0, 86400), "10")
    timeout_seconds: float = setting(_float(0.1, 600), "2")
    failures: int = setting(_int(1, 1000), "3")
    cooldown_seconds: float = setting(_float(0, 86400), "30")


@dataclass(frozen=True)
class RoutingConfig:
    discover: bool = setting(_bool, "false")
    retries: int = setting(_int(0, 100), "2")
    affinity_seconds: float = setting(_float(0, 31_536_000), "1800")
    affinity_max: int = setting(_int(0, 100_000_000), "10000")


@dataclass(frozen=True)
class ModelsConfig:
    default: str = setting(_str, "")
    regular: str = setting(_str, "qwen/qwen3-4b-2507", env=("DEFAULT_REGULAR_MODEL",))
    vision: str = setting(_str, "qwen3-vl-4b-instruct", env=("DEFAULT_VISION_MODEL",))
    summary: str = setting(_str, "")
    stand_in: tuple[str, ...] = setting(_list, "")
    think_tags: tuple[str, ...] = setting(_list, "")
    think_inline: tuple[str, ...] = setting(_list, "")


@dataclass(frozen=True)
class ContextConfig:
    max_input_tokens: int = setting(_int(256, 10_000_000), "8192",
                                    env=("CTX_MAX_INPUT_TOKENS",))
    summary_trigger_tokens: int = setting(_int(256, 10_000_000), "6144",
                                          env=("SUMMARY_TRIGGER_TOKENS",))
    keep_recent_tokens: int = setting(_int(0, 10_000_000), "2048")
    replay_reasoning: bool = setting(_bool, "false")


@dataclass(frozen=True)
class ResponsesConfig:
    keep_count: int = setting(_int(1, 100_000_000), "1000")
    keep_days: float = setting(_float(0.001, 36500), "7")
    resume_grace_seconds: float = setting(_float(0, 3600), "15")
    max_event_log_bytes: int = setting(_int(4096, 1 << 34), "8388608")


@dataclass(frozen=True)
class MockConfig:
    chunk_delay_seconds: float = setting(_float(0, 60), "0.2")
    min_chunks: int = setting(_int(1, 10000), "5")
    max_chunks: int = setting(_int(1, 10000), "10")


@dataclass(frozen=True)
class ProvidersConfig:
    allowed: tuple[str, ...] = setting(_list, "")
    anthropic: tuple[str, ...] = setting(_list, "")


@dataclass(frozen=True)
class RetentionConfig:
    sweep_interval_seconds: float = setting(_float(0, 31_536_000), "3600")
    threads_keep_days: float = setting(_float(0, 36500), "365")
    threads_max_mb: float = setting(_float(0, 1 << 30), "4096")
    responses_max_mb: float = setting(_float(0, 1 << 30), "256")
    api_responses_max_mb: float = setting(_float(0, 1 << 30), "1024")
    requests_max_mb: float = setting(_float(0, 1 << 30), "256")


@dataclass(frozen=True)
class LogConfig:
    keep_count: int = setting(_int(0, 10_000_000), "10000")
    keep_days: float = setting(_float(0, 3650), "30")
    capture_bodies: bool = setting(_bool, "false")
    max_body_bytes: int = setting(_int(0, 1 << 30), "65536")


@dataclass(frozen=True)
class OpenAIConfig:
    drop_fields: tuple[str, ...] = setting(_list, "")


@dataclass(frozen=True)
class AnthropicConfig:
    strip_billing_header: bool = setting(_bool, "true")
    store: bool = setting(_bool, "false")


@dataclass(frozen=True)
class OllamaConfig:
    port: int = setting(_int(0, 65535), "0")
    version: str = setting(_str, "0.13.0")
    tools: tuple[str, ...] = setting(_list, "")
    thinking: tuple[str, ...] = setting(_list, "")
    vision: tuple[str, ...] = setting(_list, "")


@dataclass(frozen=True)
class BatchesConfig:
    max_file_bytes: int = setting(_int(1, 1 << 40), "209715200")
    max_total_bytes: int = setting(_int(1, 1 << 44), "1073741824")
    max_lines: int = setting(_int(1, 10_000_000), "50000")
    max_parallel_lines: int = setting(_int(1, 10_000), "8")


# Each fixed section's class; `[upstream]` is the first of Config.upstreams, not a field.
SECTIONS: dict[str, type] = {
    "server": ServerConfig, "upstream": UpstreamConfig, "health": HealthConfig,
    "routing": RoutingConfig, "models": ModelsConfig, "context": ContextConfig,
    "responses": ResponsesConfig, "mock": MockConfig, "providers": ProvidersConfig,
    "retention": RetentionConfig, "log": LogConfig, "openai": OpenAIConfig,
    "anthropic": AnthropicConfig, "ollama": OllamaConfig,
    "batches": BatchesConfig}
# Sections that hold names rather than fixed keys, each read by its own function below.
NAMED_SECTIONS = ("aliases", "fallbacks", "concurrency", "keys")
NAMED_PREFIXES = ("upstream:", "pool:", "pipe:", "key:")


@dataclass(frozen=True)
class Key:
    """One fixed key, as the section classes declare it."""
    section: str
    name: str
    parse: Parser[Any]
    default: str
    env: tuple[str, ...] = ()      # extra environment names from the seed documents


def _schema() -> list[Key]:
    return [Key(section, f.name, f.metadata["parse"], f.metadata["default"], f.metadata["env"])
            for section, cls in SECTIONS.items() for f in fields(cls) if "parse" in f.metadata]


SCHEMA = _schema()
UPSTREAM_KEYS = {k.name: k for k in SCHEMA if k.section == "upstream"}
PIPE_KEYS = ("model", "system", "temperature", "max_tokens", "variables")


def env_name(key: Key) -> str:
    return f"LLMHUB_{key.section}_{key.name}".upper()


# --- the frozen result -----------------------------------------------------------------------

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


KEY_LIMIT_KEYS: dict[str, Parser[Any]] = {
    "role": _choice("user", "admin"), "routes": _list, "methods": _list, "models": _list,
    "manage_models": _bool, "requests_per_minute": _int(0, 1_000_000),
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
    server: ServerConfig
    upstreams: tuple[UpstreamConfig, ...]   # the first is [upstream], the default upstream
    models: ModelsConfig
    context: ContextConfig
    responses: ResponsesConfig
    mock: MockConfig
    providers: ProvidersConfig
    anthropic: AnthropicConfig
    openai: OpenAIConfig
    ollama: OllamaConfig
    log: LogConfig
    retention: RetentionConfig
    health: HealthConfig
    routing: RoutingConfig
    batches: BatchesConfig = field(default_factory=BatchesConfig)
    keys: dict[str, str] = field(default_factory=dict)   # key name → key ([keys], or name:key)
    key_limits: dict[str, KeyLimits] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)
    fallbacks: dict[str, tuple[str, ...]] = field(default_factory=dict)
    concurrency: dict[str, int] = field(default_factory=dict)   # model → max_concurrent
    pipes: dict[str, PipeConfig] = field(default_factory=dict)
    pools: dict[str, tuple[PoolMember, ...]] = field(default_factory=dict)
    source: str = ""          # the config file read, if any
    searched: tuple[str, ...] = ()    # where the hub looked for one, when it found none
    warnings: tuple[str, ...] = ()    # settings that work, but not as their writer meant

    @property
    def upstream(self) -> UpstreamConfig:
        return self.upstreams[0]


# --- loading ---------------------------------------------------------------------------------

def load_config(flags: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None,
                path: str | Path | None = None) -> Config:
    """Build the effective Config. `path=None`: the file LLMHUB_CONFIG names, else the first
    of `search_paths()` that exists, else none (built-in defaults)."""
    flags = {k: v for k, v in (flags or {}).items() if v is not None}
    env = os.environ if env is None else env
    searched: tuple[str, ...] = ()
    if path is None and env.get(CONFIG_ENV):
        path = env[CONFIG_ENV]
    elif path is None:
        candidates = search_paths()
        path = next((p for p in candidates if p.is_file()), None)
        searched = () if path else tuple(str(p) for p in candidates)
    parser, raw, source = _read_file(path)
    _check_sections(parser)
    sections = _sections(_database_beside_the_file(_raw_values(parser, source, env, flags),
                                                   source))
    keys = _keys(parser, sections["server"]["api_keys"])
    sections["server"]["api_keys"] = tuple(keys.values())   # the secrets alone, as before
    upstreams = _upstreams(parser, sections.pop("upstream"), source)
    config = Config(
        server=ServerConfig(**sections["server"]), keys=keys, upstreams=upstreams,
        pools=_pools(parser, {u.name for u in upstreams}, source),
        models=ModelsConfig(**sections["models"]), context=ContextConfig(**sections["context"]),
        responses=ResponsesConfig(**sections["responses"]), mock=MockConfig(**sections["mock"]),
        providers=ProvidersConfig(**sections["providers"]),
        anthropic=AnthropicConfig(**sections["anthropic"]),
        openai=OpenAIConfig(**sections["openai"]), ollama=OllamaConfig(**sections["ollama"]),
        log=LogConfig(**sections["log"]), retention=RetentionConfig(**sections["retention"]),
        aliases=_aliases(parser), fallbacks=_fallbacks(parser),
        concurrency=_concurrency(parser, source), pipes=_pipes(parser, source),
        key_limits=_key_limits(parser, keys, source),
        health=HealthConfig(**sections["health"]), routing=RoutingConfig(**sections["routing"]),
        batches=BatchesConfig(**sections["batches"]),
        source=source, searched=searched,
    )
    _validate(config)
    return replace(config, warnings=tuple(_warnings(config, parser, raw)))


def search_paths() -> list[Path]:
    """Where the hub looks for its file when neither --config nor LLMHUB_CONFIG names one:
    config.ini in the current folder, then beside main.py (a hub started from another
    folder still reads the project's file)."""
    return list(dict.fromkeys([Path.cwd() / "config.ini", PROJECT_ROOT / "config.ini"]))


def _raw_values(parser: configparser.ConfigParser, source: str, env: Mapping[str, str],
                flags: Mapping[str, Any]) -> dict[tuple[str, str], tuple[str, str]]:
    """(section, key) → (raw text, where it came from), each from the strongest source."""
    raw = {(k.section, k.name): (k.default, "default") for k in SCHEMA}
    for key in SCHEMA:
        if parser.has_option(key.section, key.name):
            raw[key.section, key.name] = (parser.get(key.section, key.name), source)
    for key in SCHEMA:
        for name in (*key.env, env_name(key)):      # LLMHUB_* wins over the seed names
            if name in env:
                raw[key.section, key.name] = (env[name], f"environment {name}")
    for (section, name), value in _flag_values(flags).items():
        raw[section, name] = (value, f"flag --{_FLAG_OF.get((section, name), name)}")
    return raw


def _database_beside_the_file(raw: dict[tuple[str, str], tuple[str, str]],
                               source: str) -> dict[tuple[str, str], tuple[str, str]]:
    """A relative db_path from the file (or the default, once a file was read) is taken from
    the file's folder, not the current one: a hub started from another folder finds the
    file beside main.py, and must find its conversations beside it too. A path from a flag
    or the environment stays the current folder's, as a shell user means it."""
    text, origin = raw["server", "db_path"]
    if source and origin in (source, "default") and not Path(text).is_absolute():
        raw["server", "db_path"] = (str(Path(source).resolve().parent / text), origin)
    return raw


def _sections(raw: dict[tuple[str, str], tuple[str, str]]) -> dict[str, dict[str, Any]]:
    """Each section's parsed values by key name: the keyword arguments of its class."""
    sections: dict[str, dict[str, Any]] = {}
    for (section, name), (text, source) in raw.items():
        sections.setdefault(section, {})[name] = _parse(section, name, text, source)
    return sections


_FLAG_OF = {("server", "db_path"): "db", ("upstream", "base_url"): "upstream",
            ("upstream", "kind"): "kind",
            ("server", "allow_remote_without_keys"): "insecure"}


def _flag_values(flags: Mapping[str, Any]) -> dict[tuple[str, str], str]:
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


def _read_file(path: str | Path | None) -> tuple[configparser.ConfigParser,
                                                 configparser.ConfigParser, str]:
    """(the file as the hub reads it, the same without inline comments, its name): the
    second shows what an inline comment cut (`_warnings`)."""
    parser, raw = _parser((";", "#")), _parser(None)
    if path is None:
        return parser, raw, ""
    path = Path(path)
    try:
        # utf-8-sig: Notepad and PowerShell write a BOM
        text = path.read_text(encoding="utf-8-sig")
        parser.read_string(text, source=str(path))
        raw.read_string(text, source=str(path))
    except OSError as exc:
        raise ConfigError(f"config file {path}: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, configparser.Error) as exc:
        raise ConfigError(f"config file {path}: {str(exc).splitlines()[0]}") from None
    return parser, raw, str(path)


def _parser(inline_comments: tuple[str, ...] | None) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None,
                                       inline_comment_prefixes=inline_comments)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # names keep their case
    return parser


def _check_sections(parser: configparser.ConfigParser) -> None:
    for section in parser.sections():
        if section.startswith(NAMED_PREFIXES) or section in NAMED_SECTIONS:
            continue
        if section not in SECTIONS:
            named = ", ".join(prefix + "NAME" for prefix in NAMED_PREFIXES)
            raise ConfigError(f"[{section}]: unknown section (known: "
                              f"{', '.join(sorted([*SECTIONS, *NAMED_SECTIONS]))}, {named})")
        known = [k.name for k in SCHEMA if k.section == section]
        for name in parser.options(section):
            if name not in known:
                raise ConfigError(f"[{section}] {name}: unknown key (known: {', '.join(known)})")


def _parse(section: str, name: str, raw: str, source: str) -> Any:
    parse = next(k.parse for k in SCHEMA if (k.section, k.name) == (section, name))
    try:
        return parse(raw)
    except ValueError:
        raise ConfigError(f"[{section}] {name} = {raw!r} (from {source}): "
                          f"expected {parse.allowed}") from None


def _named(parser: configparser.ConfigParser, kind: str) -> Iterator[tuple[str, str]]:
    """(section, NAME) of each [kind:NAME] section, in file order."""
    for section in parser.sections():
        if section.startswith(kind + ":"):
            yield section, section.split(":", 1)[1].strip()


def _upstreams(parser: configparser.ConfigParser, default: dict[str, Any],
               source: str) -> tuple[UpstreamConfig, ...]:
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


def _pools(parser: configparser.ConfigParser, upstreams: set[str],
           source: str) -> dict[str, tuple[PoolMember, ...]]:
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


MEMBER_OPTIONS: dict[str, Parser[Any]] = {"weight": _float(0.001, 1000), "tier": _int(1, 100),
                                           "max_concurrent": _int(0, 10000)}


def _pool_member(section: str, raw: str, upstreams: set[str], source: str) -> PoolMember:
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


def _keys(parser: configparser.ConfigParser, listed: tuple[str, ...]) -> dict[str, str]:
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


def _key_limits(parser: configparser.ConfigParser, keys: dict[str, str],
                source: str) -> dict[str, KeyLimits]:
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


def _aliases(parser: configparser.ConfigParser) -> dict[str, str]:
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


def _fallbacks(parser: configparser.ConfigParser) -> dict[str, tuple[str, ...]]:
    if not parser.has_section("fallbacks"):
        return {}
    return {name: _list(value) for name, value in parser.items("fallbacks")}


def _concurrency(parser: configparser.ConfigParser, source: str) -> dict[str, int]:
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


def _pipes(parser: configparser.ConfigParser, source: str) -> dict[str, PipeConfig]:
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


def _variables(raw: str) -> dict[str, str]:
    out = {}
    for pair in _list(raw):
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise ValueError
        out[name.strip()] = value.strip()
    return out


def _validate(config: Config) -> None:
    mock = config.mock
    if mock.min_chunks > mock.max_chunks:
        raise ConfigError(f"[mock] min_chunks = {mock.min_chunks} is above max_chunks = "
                          f"{mock.max_chunks}: expected min_chunks <= max_chunks")
    server = config.server
    if not _is_loopback(server.host) and not server.api_keys \
            and not server.allow_remote_without_keys:
        raise ConfigError(f"[server] host = {server.host!r}: binding beyond loopback needs "
                          "api_keys (or --insecure, or allow_remote_without_keys = true)")


def _warnings(config: Config, parser: configparser.ConfigParser,
              raw: configparser.ConfigParser) -> Iterator[str]:
    """Settings the hub runs with, but not as their writer surely meant: each names its
    section and key, and says what happens instead (the CLI prints them at startup)."""
    context = config.context
    for key in ("keep_recent_tokens", "summary_trigger_tokens"):
        value = getattr(context, key)
        if value >= context.max_input_tokens:
            yield (f"[context] {key} = {value} is not below max_input_tokens = "
                   f"{context.max_input_tokens}: a thread's history is cut to the budget "
                   "before a summary can run, so its older messages are dropped unsummarised")
    if context.keep_recent_tokens >= context.summary_trigger_tokens:
        yield (f"[context] keep_recent_tokens = {context.keep_recent_tokens} is not below "
               f"summary_trigger_tokens = {context.summary_trigger_tokens}: a summary falls "
               "due when everything unsummarised is still recent, so none is ever written")
    for section, name in _named(parser, "upstream"):
        if not parser.has_option(section, "base_url"):
            yield (f"[{section}] has no base_url: it uses [upstream]'s "
                   f"({public_url(config.upstream.base_url)}), the default upstream's server; "
                   "give it its own")
    for section in parser.sections():
        for key, value in parser.items(section):
            whole = raw.get(section, key)
            if whole != value and _free_text(section, key):
                yield _cut_warning(section, key, value, whole)


def _free_text(section: str, key: str) -> bool:
    """Whether a value may hold ' #' or ' ;' as text (a prompt, a key, a list of them),
    where an inline comment cuts it unseen; typed values and names hold no spaces."""
    if section.startswith("pipe:"):
        return key in ("model", "system", "variables")
    if section == "keys":
        return True
    parse = UPSTREAM_KEYS[key].parse if section.startswith("upstream:") and \
        key in UPSTREAM_KEYS else KEY_LIMIT_KEYS.get(key) if section.startswith("key:") \
        else next((k.parse for k in SCHEMA if (k.section, k.name) == (section, key)), None)
    return parse is not None and parse.allowed in (_str.allowed, _list.allowed)


def _cut_warning(section: str, key: str, kept: str, whole: str) -> str:
    cut = whole[len(kept):].lstrip() if whole.startswith(kept) else whole
    mark = cut[:1]
    if section == "keys" or key in SECRET_KEYS:
        kept = cut = "***"
    return (f"[{section}] {key}: read as {kept!r}: ' {mark}' starts an inline comment, so "
            f"{cut!r} is left out. If it belongs to the value, remove the space before the "
            f"{mark!r}; if it is a comment, put it on a line of its own")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def redacted(config: Config) -> dict[str, Any]:
    """The effective configuration as JSON, with every secret replaced."""
    def hide(name: str, value: Any) -> Any:
        if name in SECRET_KEYS and value:
            return "***" if isinstance(value, str) else ["***"] * len(value)
        return list(value) if isinstance(value, tuple) else value

    def section(settings: Any, **shown: Any) -> dict[str, Any]:
        """Its keys in the schema's order; `shown` replaces a value before it is hidden."""
        return {f.name: hide(f.name, shown.get(f.name, getattr(settings, f.name)))
                for f in fields(settings)}

    return {
        "source": config.source or None,
        "searched": list(config.searched),      # where no file was found, when none was
        "warnings": list(config.warnings),
        "server": section(config.server),
        "upstreams": [section(u, base_url=public_url(u.base_url)) for u in config.upstreams],
        "models": section(config.models), "context": section(config.context),
        "responses": section(config.responses),
        "mock": section(config.mock), "providers": section(config.providers),
        "anthropic": section(config.anthropic), "openai": section(config.openai),
        "ollama": section(config.ollama), "log": section(config.log),
        "keys": {name: "***" for name in config.keys},
        "aliases": dict(config.aliases),
        "fallbacks": {k: list(v) for k, v in config.fallbacks.items()},
        "concurrency": dict(config.concurrency),
        "health": section(config.health), "routing": section(config.routing),
        "pools": {name: [{f.name: getattr(m, f.name) for f in fields(m)} for m in members]
                  for name, members in config.pools.items()},
        "pipes": {name: {f.name: getattr(p, f.name) for f in fields(p) if f.name != "name"}
                  for name, p in config.pipes.items()},
    }
