"""config.py: precedence flag > environment > file > default; one-line errors; redaction."""

import subprocess
import sys
from dataclasses import FrozenInstanceError, fields

import pytest

from conftest import ROOT, write_ini
from llmhub import config as config_module
from llmhub.config import SCHEMA, SECTIONS, ConfigError, ServerConfig, load_config, redacted


def test_defaults_without_a_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(config_module, "PROJECT_ROOT", tmp_path / "clone")   # none there
    config = load_config(env={})
    assert config.server.host == "127.0.0.1" and config.server.port == 8000
    assert config.upstream.kind == "auto"     # detected at start (upstream.detect_kind)
    assert config.upstream.base_url == "http://localhost:1234/v1"
    assert config.source == ""
    assert config.searched == (str(tmp_path / "config.ini"),
                               str(tmp_path / "clone" / "config.ini"))


def test_the_file_is_looked_for_here_then_beside_main_py(tmp_path, monkeypatch):
    elsewhere, here = tmp_path / "elsewhere", tmp_path / "here"
    elsewhere.mkdir()
    here.mkdir()
    monkeypatch.chdir(elsewhere)
    config = load_config(env={})            # started from another folder: the project's file
    assert config.source == str(ROOT / "config.ini") and config.searched == ()
    assert config.aliases["fast"] == "qwen2.5-14b-instruct"
    write_ini(elsewhere / "config.ini", {"server": {"port": 1111}})
    assert load_config(env={}).server.port == 1111            # this folder's file first
    named = write_ini(here / "named.ini", {"server": {"port": 2222}})
    env = {"LLMHUB_CONFIG": str(named)}
    assert load_config(env=env).server.port == 2222           # then LLMHUB_CONFIG before it
    assert load_config(env=env).source == str(named)
    flag = write_ini(here / "flag.ini", {"server": {"port": 3333}})
    assert load_config(env=env, path=flag).server.port == 3333   # and --config before all
    with pytest.raises(ConfigError, match="nope.ini"):
        load_config(env={"LLMHUB_CONFIG": str(here / "nope.ini")})


def test_a_relative_database_is_the_config_files_neighbour(tmp_path, monkeypatch):
    """Started from another folder, the hub opens the database beside the file it read, so
    the conversations it kept are still there; a flag's path is the shell's."""
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    project.mkdir()
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    ini = write_ini(project / "config.ini", {"server": {"db_path": "data/hub.db"}})
    assert load_config(env={}, path=ini).server.db_path == str(project / "data" / "hub.db")
    bare = write_ini(project / "bare.ini", {"server": {"port": 1234}})
    assert load_config(env={}, path=bare).server.db_path == str(project / "llmhub.db")
    assert load_config(flags={"db": "mine.db"}, env={}, path=ini).server.db_path == "mine.db"
    env = {"LLMHUB_SERVER_DB_PATH": "env.db"}
    assert load_config(env=env, path=ini).server.db_path == "env.db"
    absolute = str(tmp_path / "abs.db")
    ini = write_ini(project / "abs.ini", {"server": {"db_path": absolute}})
    assert load_config(env={}, path=ini).server.db_path == absolute


WARNED = [
    ({"context": {"max_input_tokens": 1024}},
     ["[context] keep_recent_tokens = 2048 is not below max_input_tokens = 1024",
      "[context] summary_trigger_tokens = 6144 is not below max_input_tokens = 1024"]),
    ({"context": {"keep_recent_tokens": 7000}},
     ["[context] keep_recent_tokens = 7000 is not below summary_trigger_tokens = 6144"]),
    ({"upstream:gpu": {"kind": "openai"}},
     ["[upstream:gpu] has no base_url: it uses [upstream]'s (http://localhost:1234/v1)"]),
    ({"pipe:support": {"system": "You are agent #1 of 3"}},
     ["[pipe:support] system: read as 'You are agent': ' #' starts an inline comment, so "
      "'#1 of 3' is left out"]),
    ({"models": {"summary": "my-model ; v2"}},
     ["[models] summary: read as 'my-model': ' ;' starts an inline comment"]),
    ({"server": {"api_keys": "sk-abc #xyzq"}},
     ["[server] api_keys: read as '***': ' #' starts an inline comment, so '***' is left "
      "out"]),
]


@pytest.mark.parametrize("sections, starts", WARNED)
def test_settings_that_surely_mean_otherwise_are_warned_of(tmp_path, sections, starts):
    config = load_config(env={}, path=write_ini(tmp_path / "c.ini", sections))
    assert len(config.warnings) == len(starts), config.warnings
    for warning, start in zip(config.warnings, starts):
        assert warning.startswith(start), warning
    assert "sk-abc" not in repr(config.warnings) and "xyzq" not in repr(config.warnings)


def test_typed_values_and_the_shipped_file_warn_of_nothing(tmp_path):
    assert load_config(env={}, path=ROOT / "config.ini").warnings == ()
    ini = write_ini(tmp_path / "c.ini", {"server": {"port": "8001 # mine"},
                                         "aliases": {"fast": "qwen ; the small one"},
                                         "upstream:gpu": {"base_url": "http://10.0.0.2:1234"}})
    config = load_config(env={}, path=ini)
    assert config.warnings == () and config.server.port == 8001


def test_precedence_flag_over_env_over_file_over_default(tmp_path):
    ini = write_ini(tmp_path / "c.ini", {"server": {"port": 1111, "log_format": "text"},
                                         "mock": {"min_chunks": 2}})
    assert load_config(env={}, path=ini).server.port == 1111
    env = {"LLMHUB_SERVER_PORT": "2222"}
    assert load_config(env=env, path=ini).server.port == 2222
    config = load_config(flags={"port": "3333"}, env=env, path=ini)
    assert config.server.port == 3333
    assert config.server.log_format == "text"        # from the file
    assert config.mock.min_chunks == 2
    assert config.server.ping_interval_seconds == 10  # built-in default


def test_seed_environment_names(tmp_path):
    env = {"OPENAI_BASE_URL": "http://10.1.2.3:1234/v1", "OPENAI_API_KEY": "lm-studio",
           "CORS_ORIGINS": "http://a.test, http://b.test", "DEFAULT_REGULAR_MODEL": "r",
           "DEFAULT_VISION_MODEL": "v", "CTX_MAX_INPUT_TOKENS": "4096",
           "SUMMARY_TRIGGER_TOKENS": "3000", "HOST": "my-laptop"}
    config = load_config(env=env, path=write_ini(tmp_path / "c.ini", {}))
    assert config.upstream.base_url == "http://10.1.2.3:1234/v1"
    assert config.upstream.api_key == "lm-studio"
    assert config.server.cors_origins == ("http://a.test", "http://b.test")
    assert config.models.regular == "r" and config.models.vision == "v"
    assert config.context.max_input_tokens == 4096
    assert config.context.summary_trigger_tokens == 3000
    assert config.server.host == "127.0.0.1"          # $HOST is zsh's, never ours
    both = dict(env, LLMHUB_UPSTREAM_API_KEY="specific")
    assert load_config(env=both, path=tmp_path / "c.ini").upstream.api_key == "specific"


def test_upstream_flag_mock_and_url(tmp_path):
    ini = write_ini(tmp_path / "c.ini", {})
    assert load_config(flags={"upstream": "mock"}, env={}, path=ini).upstream.kind == "mock"
    config = load_config(flags={"upstream": "http://127.0.0.1:9/v1"}, env={}, path=ini)
    assert config.upstream.base_url == "http://127.0.0.1:9/v1"


@pytest.mark.parametrize("sections, env, message", [
    ({"server": {"port": "eighty"}}, {}, "[server] port = 'eighty' (from "),
    ({}, {"LLMHUB_SERVER_PORT": "70000"}, "(from environment LLMHUB_SERVER_PORT): expected a "
                                          "whole number from 0 to 65535"),
    ({"upstream": {"kind": "ollama"}}, {}, "expected one of auto, lmstudio, openai, llamacpp, vllm, anthropic, mock"),
    ({"upstream": {"base_url": "localhost:1234"}}, {}, "expected an http:// or https:// URL"),
    ({"server": {"prot": "1"}}, {}, "[server] prot: unknown key"),
    ({"sever": {"port": "1"}}, {}, "[sever]: unknown section"),
    ({"mock": {"min_chunks": 9, "max_chunks": 3}}, {}, "min_chunks <= max_chunks"),
    ({"server": {"host": "0.0.0.0"}}, {}, "binding beyond loopback needs api_keys"),
    ({"aliases": {"a": "b", "b": "a"}}, {}, "[aliases] a: cycle a -> b -> a"),
])
def test_bad_values_name_key_value_and_allowed(tmp_path, sections, env, message):
    with pytest.raises(ConfigError) as info:
        load_config(env=env, path=write_ini(tmp_path / "c.ini", sections))
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_an_unknown_section_lists_every_known_one(tmp_path):
    """[concurrency] and [keys] are read, so the list a typo gets names them too."""
    with pytest.raises(ConfigError) as info:
        load_config(env={}, path=write_ini(tmp_path / "c.ini", {"sever": {"port": "1"}}))
    known = str(info.value).split("(known: ", 1)[1]
    for section in ("server", "upstream", "retention", "aliases", "fallbacks", "concurrency",
                    "keys", "upstream:NAME", "pool:NAME", "pipe:NAME", "key:NAME"):
        assert section in known.replace(")", "").split(", "), section


def test_sections_are_typed_and_the_schema_is_their_fields():
    config = load_config(env={}, path=ROOT / "config.ini")
    assert isinstance(config.server, ServerConfig) and config.server.port == 8000
    with pytest.raises(FrozenInstanceError):
        config.server.port = 1                              # type: ignore[misc]
    assert [k.name for k in SCHEMA if k.section == "server"] == \
        [f.name for f in fields(ServerConfig)]
    assert {k.section for k in SCHEMA} == set(SECTIONS)


def test_remote_bind_allowed_with_keys(tmp_path):
    ini = write_ini(tmp_path / "c.ini", {"server": {"host": "0.0.0.0", "api_keys": "k1"}})
    assert load_config(env={}, path=ini).server.api_keys == ("k1",)


def test_bad_value_stops_startup_with_exit_2():
    result = subprocess.run([sys.executable, "main.py", "--port", "x"], cwd=ROOT,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "llmhub: [server] port = 'x' (from flag --port): expected a whole number from 0 to "
        "65535"]


def test_missing_config_file_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="nope.ini"):
        load_config(env={}, path=tmp_path / "nope.ini")


def test_bom_and_named_sections(tmp_path):
    ini = tmp_path / "c.ini"
    ini.write_bytes(b"\xef\xbb\xbf[upstream:cloud]\nkind = openai\n"
                    b"base_url = https://api.example.com/v1\napi_key = sk-1\n"
                    b"[aliases]\nGPT-4 = cloud:gpt-4o\n[fallbacks]\nGPT-4 = a, b\n"
                    b"[pipe:support]\nmodel = m\nvariables = company=Acme, tone=kind\n")
    config = load_config(env={}, path=ini)
    assert [u.name for u in config.upstreams] == ["default", "cloud"]
    assert config.upstreams[1].api_key == "sk-1"
    assert config.aliases == {"GPT-4": "cloud:gpt-4o"}
    assert config.fallbacks == {"GPT-4": ("a", "b")}
    assert config.pipes["support"].variables == {"company": "Acme", "tone": "kind"}


def test_redaction_hides_every_secret(tmp_path):
    ini = write_ini(tmp_path / "c.ini", {"server": {"api_keys": "hubkey1, hubkey2"},
                                         "upstream": {"api_key": "sk-upstream"},
                                         "upstream:b": {"api_key": "sk-other"}})
    shown = repr(redacted(load_config(env={}, path=ini)))
    for secret in ("hubkey1", "hubkey2", "sk-upstream", "sk-other"):
        assert secret not in shown
    assert "***" in shown


def test_config_ini_documents_every_key_with_its_default():
    text = (ROOT / "config.ini").read_text(encoding="utf-8")
    config = load_config(env={}, path=ROOT / "config.ini")
    for key in SCHEMA:
        assert f"\n{key.name} = {key.default}".rstrip() in text, f"{key.section}.{key.name}"
    assert config.server.port == 8000   # the shipped file parses, and keeps the defaults


def test_insecure_flag_allows_a_remote_bind_without_keys(tmp_path):
    ini = write_ini(tmp_path / "c.ini", {})
    config = load_config(flags={"host": "0.0.0.0", "insecure": True}, env={}, path=ini)
    assert config.server.allow_remote_without_keys is True
    result = subprocess.run([sys.executable, "main.py", "--host", "0.0.0.0", "--port", "0",
                             "--config", str(ini)], cwd=ROOT, capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 2
    assert "binding beyond loopback needs api_keys (or --insecure" in result.stderr


def test_pools_are_read_and_their_mistakes_named(tmp_path):
    ini = write_ini(tmp_path / "c.ini", {
        "upstream:gpu": {"base_url": "http://10.0.0.2:8080/v1"},
        "pool:qwen": {"targets": "gpu:qwen3-8b weight=2 max_concurrent=4, "
                                 "default:qwen3-8b tier=2"}})
    pool = load_config(env={}, path=ini).pools["qwen"]
    assert [(m.upstream, m.model, m.weight, m.tier, m.max_concurrent) for m in pool] == [
        ("gpu", "qwen3-8b", 2.0, 1, 4), ("default", "qwen3-8b", 1.0, 2, 0)]
    for targets, expected in [("laptop:m", "UPSTREAM one of default, gpu"),
                              ("gpu:m speed=3", "expected weight=N, tier=N"),
                              ("gpu:m tier=0", "a whole number from 1 to 100"),
                              ("", "expected UPSTREAM:model")]:
        write_ini(ini, {"upstream:gpu": {"base_url": "http://10.0.0.2:8080/v1"},
                        "pool:qwen": {"targets": targets}})
        with pytest.raises(ConfigError, match=expected):
            load_config(env={}, path=ini)
