"""What the model sees: token estimates, and the input built from a thread (DESIGN §7).

Token counts are estimated without a tokenizer; upstream-reported usage replaces them
whenever the upstream sends it, and estimates are marked as such wherever they are reported.
`build_input` is the one place that decides which stored messages reach the upstream: the
input budget and summaries belong there.
"""

from llmhub.errors import BadRequest

__all__ = ["estimate_tokens", "estimate_messages", "estimate_input", "content_text",
           "message_tokens", "build_input", "to_upstream", "split_for_summary",
           "SUMMARY_PREFIX"]

CHARS_PER_TOKEN = 4   # the usual rule of thumb for English; Cyrillic runs a little denser


def estimate_tokens(text: str) -> int:
    return (len(text) + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN if text else 0


def estimate_messages(messages: list) -> int:
    """Content tokens plus a few for each message's role and framing."""
    return sum(message_tokens(m) if isinstance(m, dict) else 4 for m in messages)


def estimate_input(value) -> int:
    """Tokens of a completion prompt or an embeddings input: a string, token ids, or a list
    of either (token ids count one each)."""
    if isinstance(value, str):
        return estimate_tokens(value)
    if isinstance(value, int):
        return 1
    if isinstance(value, list):
        return sum(estimate_input(item) for item in value)
    return 0


def content_text(content) -> str:
    """A message's text: a string as is, content parts' text joined, anything else ''."""
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return content if isinstance(content, str) else ""


SUMMARY_PREFIX = "Summary of the earlier conversation:\n"


def message_tokens(message: dict) -> int:
    """One message's tokens: its content's, and 4 for its role and framing."""
    return 4 + estimate_tokens(content_text(message.get("content")))


def build_input(system: str | None, history: list[dict], new: list[dict],
                summary: dict | None = None, budget: int | None = None,
                totals: dict | None = None, reasoning: bool = False) -> tuple[list, dict]:
    """The upstream messages for a turn, and a report of what went in and what did not.

    Order: system prompt, thread summary, the newest history that fits `budget`, the new
    turn. History is cut from the oldest end, so what is sent is always a contiguous recent
    window. An assistant turn that failed before saying anything stays in the thread but is
    never sent. With no budget, everything goes. A new turn that alone exceeds the budget is
    a 400 with the numbers. `history` may be only the newest part of what is unsummarised;
    `totals` ({messages, tokens}) then describes all of it. A stored answer's reasoning is
    sent with it only with `reasoning` ([context] replay_reasoning).
    """
    head = [{"role": "system", "content": system}] if system else []
    turn = [to_upstream(m, reasoning) for m in new]
    fixed = estimate_messages(head + turn)
    if budget is not None and fixed > budget:
        raise BadRequest(f"The new turn needs about {fixed} tokens (system prompt and input), "
                         f"over the input budget of {budget} tokens ([context] "
                         "max_input_tokens)", param="input", code="context_length_exceeded")
    if summary:
        note = {"role": "system", "content": SUMMARY_PREFIX + summary["text"]}
        if budget is None or fixed + message_tokens(note) <= budget:
            head, fixed = head + [note], fixed + message_tokens(note)
        else:
            summary = None
    sendable = [m for m in history if m["role"] != "assistant" or m["content"] or
                m["tool_calls"]]
    kept, used = _newest_that_fit(sendable, fixed, budget)
    totals = totals or {"messages": len(history),
                        "tokens": sum(message_tokens(m) for m in history)}
    unread = totals["messages"] - len(history)     # older than the window: never read
    report = {"max_input_tokens": budget, "input_tokens": used,
              "history_tokens": totals["tokens"],
              "messages": {"included": len(kept),
                           "dropped": unread + len(sendable) - len(kept), "new": len(new)},
              "summarised": {"upto_seq": summary["upto_seq"], "tokens": summary["tokens"]}
              if summary else None}
    return head + [to_upstream(m, reasoning) for m in kept] + turn, report


def _newest_that_fit(history: list[dict], used: int, budget: int | None):
    kept = []
    for message in reversed(history):
        tokens = message_tokens(message)
        if budget is not None and used + tokens > budget:
            break
        kept.append(message)
        used += tokens
    return kept[::-1], used
def to_upstream(message: dict, reasoning: bool = False) -> dict:
    """A stored (or normalised) message as the upstream wants it: no empty optional fields,
    and reasoning only when asked for, under the name OpenAI-compatible servers read."""
    out = {"role": message["role"], "content": message["content"]}
    for field in ("name", "tool_call_id", "tool_calls"):
        if message.get(field):
            out[field] = message[field]
    if reasoning and message.get("reasoning"):
        out["reasoning_content"] = message["reasoning"]
    return out


def split_for_summary(messages: list[dict], keep_recent: int) -> tuple[list, list]:
    """(older part to summarise, newest tail of about `keep_recent` tokens kept verbatim)."""
    cut, tail = len(messages), 0
    while cut > 0 and tail + message_tokens(messages[cut - 1]) <= keep_recent:
        cut -= 1
        tail += message_tokens(messages[cut])
    return messages[:cut], messages[cut:]
