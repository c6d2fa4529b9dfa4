"""Command line: flags → Config → Hub → server; serve until Ctrl-C or SIGTERM.

No business logic here. Shutdown order matters: cancel every run (streams send their end),
stop accepting, close the database, exit 0. `shutdown()` must not run on the thread inside
`serve_forever()`, so the server runs on a helper thread and the main thread waits for a
signal (with a timed wait, so Ctrl-C gets through on Windows too).
"""

import argparse
import signal
import sqlite3
import sys
import threading
from pathlib import Path

from llmhub import __version__, logs
from llmhub.config import ConfigError, load_config
from llmhub.errors import HubError
from llmhub.http.origins import startup_warnings
from llmhub.http.server import HubServer, make_server
from llmhub.hub import Hub
from llmhub.redaction import redact

__all__ = ["main", "parse_args"]

# How long a thread may wait for the GIL before it forces the holder to hand it over (Python's
# default is 5 ms). The hub's threads hold it for well under a millisecond between blocking
# calls, so a forced hand-off happens only when the OS has paused the holder (the machine's
# cores are busy: the model server, the clients). The forced hand-off then costs the holder a
# wait of its own: at 64 clients on 2 cores, 50 ms served 9–23% more (bench/README.md,
# fifth round). The price: a thread running Python for longer without a blocking call
# (a huge request's checks) holds up the others for up to 50 ms at a time, not 5.
SWITCH_INTERVAL = 0.05


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="llmhub", description="One local hub for every "
                                     "LLM client on this machine.")
    parser.add_argument("--config", help="config file (default: $LLMHUB_CONFIG, else "
                                         "config.ini in this folder, else beside main.py)")
    parser.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", help="port to listen on (default 8000; 0 picks one)")
    parser.add_argument("--db", help="SQLite database file (default llmhub.db)")
    parser.add_argument("--upstream", help="upstream base URL, or 'mock' for the built-in mock")
    parser.add_argument("--kind", help="the upstream's kind: lmstudio, llamacpp, vllm, openai, "
                                       "anthropic or mock (default: detected at start)")
    parser.add_argument("--log-level", help="debug, info, warning or error")
    parser.add_argument("--log-format", help="json (default) or text")
    parser.add_argument("--insecure", action="store_true", default=None,
                        help="allow binding beyond loopback without api_keys")
    parser.add_argument("--version", action="version", version=f"llmhub {__version__}")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    for stream in (sys.stdout, sys.stderr):
        # Redirected on Windows, these use the locale's code page: an upstream's Cyrillic
        # error message must not crash the startup line or a log line.
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    args = parse_args(argv)
    try:
        config = load_config(flags=vars(args), path=args.config)
    except ConfigError as exc:     # it may quote a value: a URL with its password
        print(f"llmhub: {redact(str(exc))}", file=sys.stderr)
        return 2
    logs.setup(config.server.log_level, config.server.log_format)
    for warning in (*config.warnings, *startup_warnings(config.server)):
        say(f"llmhub: warning: {warning}")
    try:
        hub = Hub(config)
    except (OSError, sqlite3.Error, HubError) as exc:
        say(f"llmhub: cannot open the database {config.server.db_path}: {exc}")
        return 2
    servers: list[HubServer] = []
    for port in (config.server.port, config.ollama.port):
        if servers and not port:
            continue                       # [ollama] port = 0: no second listener
        try:
            servers.append(make_server(hub, port=port))
        except OSError as exc:
            for server in servers:
                server.server_close()
            hub.close()
            say(f"llmhub: cannot listen on {config.server.host}:{port}: "
                f"{exc.strerror or exc}")
            return 2
    return serve(servers, hub)


def say(text: str) -> None:
    """A line for people on stderr, after what the hub logged before it (logs.py writes
    log lines from a thread of its own)."""
    logs.flush()
    print(text, file=sys.stderr, flush=True)


def startup_lines(server, hub) -> list[str]:
    """The line that says where the hub listens, which config file it read (or where it
    looked), and how each upstream answered; then, for each that did not, what to do."""
    parts, unreachable = [], []
    for upstream in hub.upstreams.values():
        probe = upstream.probe(timeout=2.0)
        state = (f"reachable, {probe['latency_ms']:g} ms" if probe["reachable"]
                 else f"NOT reachable: {probe['error']}")
        parts.append(f"{upstream.kind} {upstream.base_url} ({state})")
        if probe.get("reason") in ("unreachable", "timeout"):
            unreachable.append(upstream)     # nothing answered: say how to start without it
    lines = [f"llmhub {hub.version} listening on {server.url} - {config_said(hub.config)} - "
             "upstream " + "; ".join(parts)]
    lines += [unreachable_hint(upstream) for upstream in unreachable]
    return [redact(line, hub.engine.secrets) for line in lines]   # a probe's error may echo
                                                                   # the key it was sent


def config_said(config) -> str:
    if config.source:
        return f"config {Path(config.source).resolve()}"
    return (f"no config file (looked for {' and '.join(config.searched) or 'none'}): "
            "built-in defaults, no aliases")


def unreachable_hint(upstream) -> str:
    if upstream.name == "default":
        where = ("--upstream URL (or LLMHUB_UPSTREAM_BASE_URL, or [upstream] base_url in "
                 "the config file)")
    else:
        where = f"[upstream:{upstream.name}] base_url in the config file"
    return (f"llmhub: nothing answers at {upstream.base_url}: start the model server there "
            f"(LM Studio: Developer > Start Server, or `lms server start`), point the hub at "
            f"a running one with {where}, or try the hub without one: "
            f"python main.py --upstream mock")


def serve(servers: list, hub) -> int:
    """Serve the hub on each listener ([server] port, and [ollama] port if set) until a
    signal; then stop them all, and close the hub once."""
    stop = threading.Event()
    sys.setswitchinterval(SWITCH_INTERVAL)
    # Handlers go in before the startup line: a Ctrl-C right after it must still stop cleanly.
    for name in ("SIGINT", "SIGTERM", "SIGBREAK"):     # SIGBREAK: Ctrl-Break on Windows
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), lambda signum, frame: stop.set())
    threads = [threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                                name="serve_forever", daemon=True) for server in servers]
    for thread in threads:
        thread.start()
    try:
        for line in startup_lines(servers[0], hub):
            print(line, flush=True)
        for server in servers[1:]:
            print(f"llmhub: Ollama's clients may use {server.url} too", flush=True)
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    say("llmhub: stopping: cancelling runs, closing the database")
    for server in servers:
        server.stop(grace=3.0)   # streams get their terminal events; all of it inside 5 s
    hub.close()
    for thread in threads:
        thread.join(1)
    return 0
