"""What the model sees: token estimates, and the input built from a thread (DESIGN §7).

Token counts are estimated without a tokenizer; upstream-reported usage replaces them
whenever the upstream sends it, and estimates are marked as such wherever they are reported.
`build_input` is the one place that decides which stored messages reach the upstream: the
input budget and summaries belong there.
"""

__all__ = ["estimate_tokens", "estimate_messages", "build_input", "to_upstream"]

CHARS_PER_TOKEN = 4   # the usual rule of thumb for English; Cyrillic runs a little denser


def estimate_tokens(text: str) -> int:
    return (len(text) + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN if text else 0


def estimate_messages(messages: list) -> int:
    """Content tokens plus a few for each message's role and framing."""
    total = 0
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list):
            content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
        total += 4 + estimate_tokens(content if isinstance(content, str) else "")
    return total


def build_input(system: str | None, history: list[dict], new: list[dict]) -> list[dict]:
    """System prompt, then the thread's history, then the new turn, as OpenAI messages.

    Today the whole history goes upstream; the context budget will cut here. An assistant
    turn that failed before saying anything is kept in the thread but not sent.
    """
    messages = [{"role": "system", "content": system}] if system else []
    messages += [to_upstream(m) for m in history
                 if m["role"] != "assistant" or m["content"] or m["tool_calls"]]
    return messages + [to_upstream(m) for m in new]


def to_upstream(message: dict) -> dict:
    """A stored (or normalised) message as the upstream wants it: no empty optional fields."""
    out = {"role": message["role"], "content": message["content"]}
    for field in ("name", "tool_call_id", "tool_calls"):
        if message.get(field):
            out[field] = message[field]
    return out
