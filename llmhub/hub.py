"""The assembled application: configuration, database and stores, run registry, upstreams
and engine.

The server holds one Hub and hands it to every view as `request.hub`. Dialect views use
`hub.engine` (the façade, engine/facade.py), `hub.config`, `hub.sessions`, `hub.metrics`
and `hub.batches` (the Files and Batch APIs, engine/batches.py); the database, its stores
and the registry are here for the server's own lifecycle. Building it opens the database; `close()` cancels every live run and closes it.
"""

import functools
import time

from llmhub import __version__
from llmhub.config import Config
from llmhub.dialects import batches as batch_lines
from llmhub.engine.accounting import Limits, RequestLog
from llmhub.engine.batches import Batches
from llmhub.engine.facade import Engine
from llmhub.engine.metrics import Metrics
from llmhub.engine.runs import Registry
from llmhub.engine.session_log import SessionLog
from llmhub.store.batches import BatchStore
from llmhub.store.database import Database
from llmhub.store.files import FileStore, files_folder
from llmhub.store.requests import RequestStore
from llmhub.store.responses import ResponseStore
from llmhub.store.retention import Upkeep
from llmhub.store.threads import ThreadStore
from llmhub.upstream import make_upstreams

__all__ = ["Hub"]


class Hub:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.version = __version__
        self.started = time.time()
        self.db = Database(config.server.db_path)
        self.threads = ThreadStore(self.db)
        self.responses = ResponseStore(self.db)
        self.request_store = RequestStore(self.db)
        self.responses.fail_interrupted_responses()   # their runs died with the last process
        self.responses.fail_interrupted_api_responses()
        self.metrics = Metrics()
        self.request_log = RequestLog(self.request_store, config.log.keep_count,
                                      config.log.keep_days, config.log.max_body_bytes)
        self.limits = Limits(config.key_limits)
        self.registry = Registry(on_retire=self._retired)
        self.upstreams = make_upstreams(config)
        self.engine = Engine(config, self.upstreams, self.registry, self.db, self.threads,
                             self.responses, self.request_store, self.request_log,
                             self.limits)
        self.sessions = SessionLog()
        self.feeds: dict = {}     # name → feed.Feed: one computation per tick for all its
                                  # readers (the runs page's: dialects/service.py)
        # the retention sweeps, and the retries of ends the database refused
        self.upkeep = Upkeep(self.db, self.threads, self.registry, config)
        self.engine.upkeep = self.upkeep
        self.upkeep.start()
        # OpenAI's Files and Batch APIs; the worker resumes what the last process left
        self.batches = Batches(config, FileStore(self.db, files_folder(config.server.db_path)),
                               BatchStore(self.db), self._cancel_line)
        self.batches.run_line = functools.partial(batch_lines.run_line, self)
        self.batches.start()
        self.routes: tuple = ()   # the API's route table, handed over by the server that
                                  # serves it (service views list it: /, /help, OpenAPI)

    def _retired(self, run) -> None:
        """Every run, once, as it ends (on its driver's thread): counted, and its record
        logged, whatever its end."""
        record = run.info["record"] = self.request_log.record(run)
        self.metrics.run_finished(record)
        self.limits.spend(record["key"], (record["input_tokens"] or 0) +
                          (record["output_tokens"] or 0), run.budget)

    def _cancel_line(self, run_id: str) -> None:
        self.registry.cancel(run_id, "cancelled", wait=0)

    def close(self, reason: str = "shutdown") -> None:
        self.batches.stop()
        self.upkeep.stop()
        self.engine.close()
        self.registry.cancel_all(reason)
        self.request_log.close()
        self.db.close()
