"""Token estimates without a tokenizer (DESIGN §7).

Upstream-reported usage replaces these whenever the upstream sends it; estimates are marked
as such wherever they are reported.
"""

__all__ = ["estimate_tokens", "estimate_messages"]

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
