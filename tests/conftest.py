"""Fixtures: a fake LM Studio and a factory of real hubs, both on port 0 over real sockets;
and a deadline on every test's setup, call and teardown (deadline.py), so a test that would
block forever fails instead: 60 s each by default, `@pytest.mark.deadline(seconds)` for a
test that needs another, LLMHUB_TEST_DEADLINE to change the default."""

import logging
import os
import sys
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from deadline import deadline  # noqa: E402
from fake_anthropic import FakeAnthropic  # noqa: E402
from fake_lmstudio import FakeLMStudio  # noqa: E402
from llmhub.config import load_config  # noqa: E402
from llmhub.http.server import make_server  # noqa: E402
from llmhub.hub import Hub  # noqa: E402

DEFAULT_DEADLINE = float(os.environ.get("LLMHUB_TEST_DEADLINE", "60"))


def pytest_configure(config):
    config.addinivalue_line("markers", "deadline(seconds): this test's bound per phase "
                                       "(setup, call, teardown) instead of the default")


def bounded(item, phase: str):
    marker = item.get_closest_marker("deadline")
    seconds = marker.args[0] if marker is not None else DEFAULT_DEADLINE
    return deadline(seconds, f"{item.nodeid} ({phase})")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item):
    with bounded(item, "setup"):
        yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    with bounded(item, "call"):
        yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item, nextitem):
    with bounded(item, "teardown"):
        yield


@pytest.fixture(autouse=True)
def llmhub_logging_restored():
    """A test that calls logs.setup() leaves the 'llmhub' logger as it found it: setup()
    stops its propagation, and a later test's caplog would see none of its records."""
    logger = logging.getLogger("llmhub")
    handlers, level, propagate = list(logger.handlers), logger.level, logger.propagate
    yield
    for handler in logger.handlers:
        if handler not in handlers:
            handler.close()
    logger.handlers[:] = handlers
    logger.setLevel(level)
    logger.propagate = propagate


@pytest.fixture
def fake():
    server = FakeLMStudio().start()
    yield server
    server.stop()


def write_ini(path: Path, sections: dict) -> Path:
    lines = []
    for section, values in sections.items():
        lines.append(f"[{section}]")
        lines += [f"{key} = {value}" for key, value in values.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def make_hub(tmp_path, fake):
    """Start a hub on port 0 with config.ini sections layered on test defaults."""
    started = []

    def start(sections: dict | None = None, upstream_url: str | None = None):
        base = {"server": {"port": 0, "db_path": tmp_path / f"hub{len(started)}.db",
                           "ping_interval_seconds": 0.2, "log_level": "warning"},
                # a kind named: detection's requests would take scripted fakes' replies
                "upstream": {"base_url": upstream_url or fake.url, "kind": "lmstudio"},
                "health": {"interval_seconds": 0}}     # probes off unless a test wants them
        for section, values in (sections or {}).items():
            base.setdefault(section, {}).update(values)
        ini = write_ini(tmp_path / f"config{len(started)}.ini", base)
        hub = Hub(load_config(env={}, path=ini))
        server = make_server(hub, raise_errors=True)
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02},
                                  daemon=True)
        thread.start()
        started.append((server, thread))
        return server

    yield start
    for server, thread in started:
        server.stop(grace=2)
        server.hub.close()
        thread.join(5)
        assert not server.errors, f"a view raised: {server.errors!r}"


@pytest.fixture
def hub(make_hub):
    return make_hub()


@pytest.fixture
def upstream_anthropic():
    """A fake Anthropic Messages API, for hubs with an `anthropic` upstream."""
    server = FakeAnthropic().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """One headless Chromium per module (tests/chromium.py); skip marks: NEEDS_CHROMIUM."""
    from chromium import Chromium, find_chromium
    chromium = Chromium.start(find_chromium(), tmp_path_factory.mktemp("profile"))
    yield chromium
    chromium.close()
