"""Thread summaries (DESIGN §7): when one is due, and writing it with the summary model;
and thread titles, a few words by the same model (the web page asks after a first reply).

A summary runs in the background after the turn that made it due, so no response ever waits
for it; the turn that triggered it reports `summary_scheduled`, the next ones `summarised`.
One pass at a time per thread. A huge backlog (an imported thread) is summarised a budget's
worth at a time, each pass folding the previous summary in, rather than in one enormous
request.
"""

import logging
import re
import threading

from llmhub.context import content_text, estimate_tokens, message_tokens, split_for_summary
from llmhub.engine.runs import COMPLETED
from llmhub.errors import BadRequest, UpstreamError

__all__ = ["Summaries", "summary_prompt", "SUMMARY_INSTRUCTION"]

log = logging.getLogger("llmhub.pipes")

SUMMARY_INSTRUCTION = (
    "Summarise the conversation below for your own later use. Keep every fact, name, number, "
    "decision and open question; drop pleasantries. Write plain prose, at most a few "
    "paragraphs, in the conversation's language.")


TITLE_INSTRUCTION = (
    "Name the conversation below in three to six words, in its language. Answer with the "
    "title alone: no quotes, no full stop.")
TITLE_MOST = 80            # characters kept of a generated title
_THINKING = re.compile(r"<think>.*?(</think>|$)", re.S)


def title_prompt(messages: list[dict]) -> list[dict]:
    return [{"role": "system", "content": TITLE_INSTRUCTION},
            {"role": "user", "content": "\n".join(transcript_lines(messages, 1500))}]


def transcript_lines(messages: list[dict], most: int | None = None) -> list[str]:
    """`role: text` a line per message, each text cut at `most` characters if given."""
    return [f"{m['role']}: {content_text(m['content'])[:most]}" for m in messages]


def clean_title(text: str) -> str:
    """The title in a model's answer: no reasoning, one line, no quotes or markup."""
    line = next((l for l in _THINKING.sub("", text).splitlines() if l.strip()), "")
    line = line.strip().strip("\"'`*#“”«»").strip()
    line = re.sub(r"^(title|название)\s*:\s*", "", line, flags=re.I).rstrip(".。!")
    return line[:TITLE_MOST].strip()


def summary_prompt(previous: dict | None, messages: list[dict]) -> list[dict]:
    lines = [f"Earlier summary: {previous['text']}"] if previous else []
    lines += transcript_lines(messages)
    return [{"role": "system", "content": SUMMARY_INSTRUCTION},
            {"role": "user", "content": "\n".join(lines)}]


class Summaries:
    """`generate(messages, model)` runs a generation to its end and returns the run."""

    def __init__(self, config, threads, generate, submit) -> None:
        self.config = config
        self.threads = threads           # store.threads.ThreadStore
        self.generate = generate
        self.submit = submit             # runs a job on a background worker
        self._running: set[str] = set()
        self._lock = threading.Lock()

    def if_due(self, run) -> None:
        """A finish hook: schedule a summary once the unsummarised tokens pass the trigger."""
        if not run.turn_stored:
            return
        context = run.context or {}
        unsummarised = context.get("history_tokens", 0) + run.input_estimate + \
            estimate_tokens(run.transcript.text)
        if unsummarised > self.config.context.summary_trigger_tokens:
            context["summary_scheduled"] = True
            self.submit(self.summarise, run.thread_id)

    def summarise(self, thread_id: str) -> bool:
        """Summarise a thread's older messages with [models] summary; True if one was stored."""
        with self._lock:
            if thread_id in self._running:
                return False
            self._running.add(thread_id)
        try:
            older, summary = self._to_summarise(thread_id)
            if not older:
                return False
            run = self.generate(summary_prompt(summary, older),
                                self.config.models.summary or None)
            text = run.transcript.text.strip()
            if run.status != COMPLETED or not text:
                log.warning("summary of thread %s failed: %s", thread_id,
                            run.error.message if run.error else run.status)
                return False
            self.threads.save_summary(thread_id, older[-1]["seq"], text, estimate_tokens(text))
            return True
        finally:
            with self._lock:
                self._running.discard(thread_id)

    def title(self, thread_id: str) -> str:
        """Name a thread from its first exchange with [models] summary, and store it."""
        first = [m for m in self.threads.page_messages(thread_id, 6, None)[0]
                 if m["role"] in ("user", "assistant")][:2]
        if not first:
            raise BadRequest("The thread has no messages to name it by", param="thread_id")
        run = self.generate(title_prompt(first), self.config.models.summary or None)
        title = clean_title(run.transcript.text)
        if run.status != COMPLETED or not title:
            raise UpstreamError("The summary model gave no title" + (
                f": {run.error.message}" if run.error else ""), code="no_title")
        self.threads.set_title(thread_id, title)
        return title

    def _to_summarise(self, thread_id: str) -> tuple[list[dict], dict | None]:
        """The oldest unsummarised messages, short of the recent tail, within one budget."""
        context = self.config.context
        chunk_budget = context.max_input_tokens * 3 // 4
        summary, oldest, newest = self.threads.summary_source(
            thread_id, chunk_budget, context.keep_recent_tokens)
        _, tail = split_for_summary(newest, context.keep_recent_tokens)
        tail_start = tail[0]["seq"] if tail else float("inf")
        chunk: list[dict] = []
        used = estimate_tokens(summary["text"]) if summary else 0
        for message in oldest:
            used += message_tokens(message)
            if message["seq"] >= tail_start or (chunk and used > chunk_budget):
                break
            chunk.append(message)
        return chunk, summary
