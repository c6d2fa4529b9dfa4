"""engine/runs.py and upstream/gate.py: the run state table, cancel by id, finish-once, FIFO
admission."""

import threading

import pytest

from llmhub.engine.runs import (CANCELLED, COMPLETED, FAILED, QUEUED, STREAMING, TRANSITIONS,
                                Registry, transition)
from llmhub.errors import Conflict, NotFound, UpstreamError
from llmhub.events import TextDelta
from llmhub.upstream.gate import Gate


@pytest.mark.parametrize("state, event, new", [
    (QUEUED, "start", STREAMING), (QUEUED, "cancel", CANCELLED), (QUEUED, "fail", FAILED),
    (STREAMING, "complete", COMPLETED), (STREAMING, "cancel", CANCELLED),
    (STREAMING, "fail", FAILED),
])
def test_legal_transitions(state, event, new):
    assert transition(state, event) == new


@pytest.mark.parametrize("state", [COMPLETED, CANCELLED, FAILED])
@pytest.mark.parametrize("event", ["start", "complete", "cancel", "fail"])
def test_final_states_have_no_way_out(state, event):
    with pytest.raises(ValueError):
        transition(state, event)


def test_queued_run_cannot_complete_without_starting():
    assert (QUEUED, "complete") not in TRANSITIONS
    with pytest.raises(ValueError):
        transition(QUEUED, "complete")


def test_cancel_is_idempotent_and_remembered():
    registry = Registry()
    run = registry.create()
    assert registry.cancel(run.id) == CANCELLED
    assert registry.cancel(run.id) == CANCELLED
    assert registry.get(run.id) is None          # left the live registry
    assert [e.kind for e in run.events] == ["done"]
    assert run.events[-1].status == CANCELLED
    with pytest.raises(NotFound):
        registry.cancel("run_unknown")


def test_finish_once_first_wins():
    registry = Registry()
    run = registry.create()
    run.start("m", {"name": "mock"})
    assert run.finish("complete", finish_reason="stop")
    assert not run.finish("fail", error=UpstreamError("late"))
    assert registry.cancel(run.id) == COMPLETED   # cancelling a finished run says so
    assert [e.kind for e in run.events] == ["start", "done"]


def test_emits_after_finish_are_dropped_and_hooks_run_before_done():
    registry, seen = Registry(), []
    run = registry.create()
    run.on_finish(lambda r: seen.append([e.kind for e in r.events]))
    run.start("m", {})
    run.emit(TextDelta("a"))
    run.cancel()
    assert not run.emit(TextDelta("b"))
    assert seen == [["start", "delta"]]           # the hook ran before done was published


def test_duplicate_run_id_conflicts():
    registry = Registry()
    registry.create("mine")
    with pytest.raises(Conflict):
        registry.create("mine")


def test_gate_is_first_in_first_out_and_cancellable():
    registry, gate = Registry(), Gate(1)
    first, second, third = registry.create(), registry.create(), registry.create()
    assert gate.enter(first)
    order, entered = [], threading.Event()

    def wait(run):
        if gate.enter(run):
            order.append(run.id)
            entered.set()
        else:
            order.append("cancelled " + run.id)

    waiters = [threading.Thread(target=wait, args=(r,)) for r in (second, third)]
    waiters[0].start()
    while gate.queued < 1:
        pass
    waiters[1].start()
    while gate.queued < 2:
        pass
    assert gate.position(second) == 1 and gate.position(third) == 2
    third.cancel()
    waiters[1].join(2)
    gate.leave()
    waiters[0].join(2)
    assert order == ["cancelled " + third.id, second.id]


def test_a_failing_background_job_is_logged_and_its_thread_lives_on():
    import logging
    from llmhub.engine.workers import Workers

    class Catch(logging.Handler):
        def __init__(self):
            super().__init__()
            self.logged = threading.Event()

        def emit(self, record):
            if "boom" in record.getMessage():
                self.logged.set()

    catch, logger = Catch(), logging.getLogger("llmhub.pipes")
    logger.addHandler(catch)
    workers, threads = Workers(), []

    def boom():
        threads.append(threading.current_thread())
        raise RuntimeError("job bug")

    try:
        workers.submit(boom)
        assert catch.logged.wait(2)
    finally:
        logger.removeHandler(catch)
    assert threads[0].is_alive()          # the worker survived its job's exception
