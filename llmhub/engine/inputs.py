"""A run's input plan: what the upstream is sent, and what of it is kept.

Every dialect picks one plan for each request and hands it to the engine in a ChatRequest:

- `Stateless`: the messages as the client gave them (chat completions, Messages, the seed
  dialects without a thread);
- `Chain`: a new turn after earlier ones the client does not resend (a Responses chain by
  `previous_response_id`), cut from the oldest to fit the budget when asked;
- `ThreadTurn`: a turn in a stored thread (a new one when `thread_id` is None): the turn is
  stored before the upstream is called, the reply after, one turn at a time per thread;
- `Resent`: a client that resends its whole conversation each time (the Messages API) and
  has the new part of it, and the reply, kept in a thread;
- `Prompt`: a legacy text completion, whose prompt travels in the request's params;
- `Summary`: the summary model's own call, on the hub's behalf.

A plan's `prepare(generation, run)` runs in the request's thread and returns the run's
input: a function its driver calls, which gives the upstream messages, or None when the run
ended while it waited for its turn. Whatever can be refused (a thread that does not exist, a
turn over budget) is refused there, before anything runs.
"""

import functools
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from llmhub.context import build_input, estimate_input, estimate_messages
from llmhub.messages import normalise_message

__all__ = ["InputPlan", "Stateless", "Chain", "ThreadTurn", "Resent", "Prompt", "Summary"]


class InputPlan(Protocol):
    """What the engine asks of every plan below."""
    endpoint: str          # the upstream call it is for: chat, or completions

    def prepare(self, generation: Any, run: Any) -> Callable[[], list | None]:
        """The run's input (see the module's docstring); raises what is refused."""


def ready(run, messages: list):
    """An input known now: its estimate is the run's, and the driver gets it as it is."""
    run.input_estimate = estimate_messages(messages)
    return lambda: messages


@dataclass
class Stateless:
    messages: list
    system: str | None = None
    endpoint = "chat"

    def prepare(self, generation, run):
        system = [{"role": "system", "content": self.system}] if self.system else []
        return ready(run, system + self.messages)


@dataclass
class Summary(Stateless):
    """The hub asking the summary model, for itself or for a client."""


@dataclass
class Chain:
    messages: list
    history: list = field(default_factory=list)   # earlier turns, normalised
    system: str | None = None
    budget: bool = False                          # cut to [context] max_input_tokens
    endpoint = "chat"

    def prepare(self, generation, run):
        budget = generation.config.context.max_input_tokens if self.budget else None
        messages, run.context = build_input(self.system, self.history, self.messages,
                                            budget=budget)
        return ready(run, messages)


@dataclass
class ThreadTurn:
    messages: list                                # normalised (messages.normalise_message)
    thread_id: str | None = None                  # None: a new thread
    system: str | None = None
    budget: bool = True
    endpoint = "chat"

    def prepare(self, generation, run):
        budget = generation.config.context.max_input_tokens if self.budget else None
        build_input(self.system, [], self.messages, budget=budget)   # alone too big?
        if self.thread_id is None:                 # a new thread: nobody to wait for
            turn = ready(run, generation.store_turn(run, self, budget))
        else:
            generation.require_thread(self.thread_id)   # 404 before anything runs
            run.thread_id = self.thread_id
            run.input_estimate = estimate_messages(self.messages)   # until the turn is built
            turn = functools.partial(generation.take_turn, run, self, budget)
        generation.join_thread(run)
        return turn


@dataclass
class Resent:
    messages: list
    keep_in: str                                  # the thread that keeps the conversation
    endpoint = "chat"

    def prepare(self, generation, run):
        turns = [normalise_message(m, f"messages[{i}]") for i, m in
                 enumerate(self.messages) if m.get("role") != "system"]
        generation.threads.append_new(self.keep_in, turns, run.info["key"])
        run.thread_id, run.turn_stored = self.keep_in, True
        run.on_finish(generation.record_reply)
        return ready(run, self.messages)


@dataclass
class Prompt:
    prompt: object                                # a string, token ids, or a list of either
    endpoint = "completions"

    def prepare(self, generation, run):
        run.input_estimate = estimate_input(self.prompt)
        return lambda: []
