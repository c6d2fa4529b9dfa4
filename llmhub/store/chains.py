"""The turn chain: a hash of a thread's turns up to and including each message.

A client that resends its whole conversation each turn has only what follows the longest
stored prefix appended (threads.ThreadStore.append_new). Each stored message carries its
chain, so that prefix is found by index look-ups, never by reading the thread. The hash
must stay what it is: stored chains were made by it (migration add_turn_chains).
"""

import hashlib
import json
from collections.abc import Iterator

from llmhub.context import content_text

__all__ = ["chain", "chains", "stored_turn"]


def stored_turn(row) -> dict:
    """A stored message's fields that _turn reads, from a row of (…, role, content,
    tool_call_id, tool_calls) as its last four columns."""
    role, content, tool_call_id, tool_calls = tuple(row)[-4:]
    return {"role": role, "content": json.loads(content), "tool_call_id": tool_call_id,
            "tool_calls": json.loads(tool_calls)}


def chain(previous: int | None, message: dict) -> int:
    """A hash of a thread's turns up to and including `message` (_turn: what makes two
    copies of a turn the same one), from the chain before it; 64 bits, as SQLite's
    INTEGER holds them. A resent turn hashes every message the client sent, so this is
    kept lean: the turn's repr (a tuple of strings and None: exact and stable), no JSON."""
    data = (previous or 0).to_bytes(8, "big", signed=True) + \
        repr(_turn(message)).encode("utf-8", "surrogatepass")
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big", signed=True)


def chains(previous: int | None, messages: list) -> Iterator[int]:
    """Each message's chain in turn, from the chain before the first."""
    for message in messages:
        previous = chain(previous, message)
        yield previous


def _turn(message: dict) -> tuple:
    """What makes two copies of a turn the same one: its text and its tool calls by id and
    name (a resent call's arguments are re-serialised JSON, not the model's own text)."""
    calls = tuple((c.get("id"), (c.get("function") or {}).get("name"))
                  for c in message["tool_calls"] if isinstance(c, dict))
    return (message["role"], content_text(message["content"]), message["tool_call_id"], calls)
