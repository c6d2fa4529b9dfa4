"""The typed events of a run: what upstream adapters make and what every renderer reads.

An upstream adapter turns its wire format (OpenAI chunks, Anthropic's Messages events, the
mock's words) into content events: TextDelta, ReasoningDelta, ToolCallDelta, Logprobs,
Usage and Finish. The engine publishes them to the run's log between the run's own Start
and its closing Error (a failure) and Done. A dialect renders from these and from the run's
folded Transcript; no dialect reads an upstream's wire format.

Content events made from an OpenAI-compatible chunk keep that chunk in `raw`, the same
object on every event made from it, so the OpenAI dialect can relay the upstream's chunk as
it came, unknown fields and all. Events without `raw` (Anthropic, the mock, a `<think>`
split) are rendered from their fields.

Token counts in a Usage are sane integers or None, never what an upstream sent as is:
`token_count` is the one door. A count that is not an int (a string, a float, a bool), is
negative, or is over `MAX_TOKENS` is unknown (None), and the engine estimates it. Over the
bound is unknown rather than clamped: a clamped 2**31-1 would still be charged to a key and
use up its daily budget in one reply, where an estimate is close to the truth.

With `n` > 1 an upstream answers several choices at once; each content event says which
(`choice`), and only the OpenAI dialect asks for more than one.

Finish is the model's own stop ("stop", "length", "tool_calls"), in its place in the
stream; Done is the run's end, with the run's status. A run that ends without the model
finishing (a cancel, a failure) has a Done and no Finish.
"""

from dataclasses import dataclass, field, fields

__all__ = ["Start", "TextDelta", "ReasoningDelta", "ToolCallDelta", "Logprobs", "Usage",
           "Finish", "Done", "Error", "stored", "from_stored", "weight", "MAX_TOKENS",
           "token_count"]

# No model's context comes near it (the largest are ~10 M tokens), so no real count is
# lost; and a year of sums stays exact in SQLite's 64-bit INTEGER and in JSON's 2**53.
MAX_TOKENS = 2**31 - 1


def token_count(value) -> int | None:
    """An upstream's token count as a sane int, or None: unknown, to be estimated."""
    return value if type(value) is int and 0 <= value <= MAX_TOKENS else None


@dataclass(frozen=True, slots=True)
class Start:
    """The upstream accepted the request: who answers. (Which run, when and for which thread
    a renderer reads from the live run, which it holds anyway.)"""
    kind = "start"
    model: str                          # the model the upstream was asked for
    provider: dict                      # {name, base_url} of the upstream
    input_tokens: int | None = None     # the input as estimated before the upstream counts


@dataclass(frozen=True, slots=True)
class TextDelta:
    kind = "delta"                      # the stored logs' name for it since the first release
    text: str                           # may be "" (a role-only chunk kept for its raw)
    raw: dict | None = field(default=None, compare=False)
    choice: int = 0                     # which of `n` choices it belongs to

    def __init__(self, text: str, raw: dict | None = None, choice: int = 0) -> None:
        set_text, set_raw, set_choice = _TEXT_DELTA      # why: _slot_setters
        set_text(self, text)
        set_raw(self, raw)
        set_choice(self, choice)


@dataclass(frozen=True, slots=True)
class ReasoningDelta:
    """The model thinking aloud: `reasoning_content`, `reasoning`, a `<think>` block or an
    Anthropic `thinking` block."""
    kind = "reasoning"
    text: str
    raw: dict | None = field(default=None, compare=False)
    signature: str | None = None        # Anthropic's seal on a thinking block, at its end
    choice: int = 0                     # which of `n` choices it belongs to

    def __init__(self, text: str, raw: dict | None = None, signature: str | None = None,
                 choice: int = 0) -> None:
        set_text, set_raw, set_signature, set_choice = _REASONING_DELTA   # _slot_setters
        set_text(self, text)
        set_raw(self, raw)
        set_signature(self, signature)
        set_choice(self, choice)


def _slot_setters(cls) -> tuple:
    """The setters of a frozen slotted dataclass's fields, in their order. A model's every
    token is a TextDelta or a ReasoningDelta, and the __init__ dataclass writes for a frozen
    class sets each field with object.__setattr__, which costs about twice what a slot's
    own setter does (0.55 against 0.34 µs a TextDelta); so those two classes write their
    __init__ with these. They stay frozen: assigning to a field still raises
    FrozenInstanceError. (tests/test_hot_path.py checks each such __init__ against the
    class's fields.)"""
    return tuple(cls.__dict__[f.name].__set__ for f in fields(cls))


_TEXT_DELTA = _slot_setters(TextDelta)
_REASONING_DELTA = _slot_setters(ReasoningDelta)


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """A piece of tool call `index`: the first piece carries id and name, every piece may
    carry a fragment of the JSON arguments."""
    kind = "tool_call"
    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""
    raw: dict | None = field(default=None, compare=False)
    choice: int = 0                     # which of `n` choices it belongs to


@dataclass(frozen=True, slots=True)
class Logprobs:
    kind = "logprobs"
    content: list                       # OpenAI's per-token [{token, logprob, top_logprobs}]
    raw: dict | None = field(default=None, compare=False)
    choice: int = 0                     # which of `n` choices it belongs to


@dataclass(frozen=True, slots=True)
class Usage:
    """A run's token counts. `input_tokens` is the whole prompt, OpenAI's way (its
    `prompt_tokens` includes cached tokens); `cached_tokens` (read from the upstream's
    prompt cache) and `cache_creation_tokens` (written to it: Anthropic's) are parts of
    it, None where the upstream did not say. Anthropic counts its `input_tokens` apart
    from both, so its adapter adds them up and its dialect takes them off again. An
    adapter leaves a count that is not a count None; the engine estimates it before any
    dialect reads the run's usage (generation._checked_usage)."""
    kind = "usage"
    input_tokens: int | None
    output_tokens: int | None
    reasoning_tokens: int | None = None
    input_estimated: bool = False
    output_estimated: bool = False
    raw: dict | None = field(default=None, compare=False)   # the upstream's own usage object
    cached_tokens: int | None = None
    cache_creation_tokens: int | None = None

    @property
    def total_tokens(self) -> int:
        return (self.input_tokens or 0) + (self.output_tokens or 0)   # None: not yet checked

    @property
    def estimated(self) -> bool:
        return self.input_estimated or self.output_estimated

    def counts(self) -> dict:
        return {"input_tokens": self.input_tokens, "output_tokens": self.output_tokens,
                "total_tokens": self.total_tokens}


@dataclass(frozen=True, slots=True)
class Finish:
    """The model stopped by itself; `model` is the name the upstream reported."""
    kind = "finish"
    reason: str
    model: str | None = None
    system_fingerprint: str | None = None
    raw: dict | None = field(default=None, compare=False)
    choice: int = 0                     # which of `n` choices it belongs to
    stop_sequence: str | None = None    # which of the request's stop sequences ended it


@dataclass(frozen=True, slots=True)
class Done:
    """The run's last event. `finish_reason` is the model's, or None; `reason` says why a
    cancelled run was cancelled (the client, a shutdown, an unload)."""
    kind = "done"
    status: str
    finish_reason: str | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class Error:
    """Why a run failed: a HubError's neutral form (errors.HubError.as_dict)."""
    kind = "error"
    status: int
    code: str
    message: str
    param: str | None = None
    details: dict | None = None         # an upstream failure's structured fields


# --- the stored form -------------------------------------------------------------------------

KINDS = {cls.kind: cls for cls in (Start, TextDelta, ReasoningDelta, ToolCallDelta, Logprobs,
                                   Usage, Finish, Done, Error)}
_SLIM = {"raw"}    # never stored: the relay's copy of the upstream's wire chunk


def stored(event) -> list:
    """An event as a stored response keeps it: [kind, {fields}], without the raw chunk and
    without fields at their defaults (a long answer is thousands of deltas)."""
    data = {}
    for name, default in _STORED[type(event)]:
        value = getattr(event, name)
        if value is not None and value != default:
            data[name] = value
    return [event.kind, data]


# Each kind's stored fields and their defaults, once: dataclasses.fields() builds its tuple
# afresh on every call, and a stored reply calls this for each of its events.
_STORED = {cls: tuple((f.name, f.default) for f in fields(cls) if f.name not in _SLIM)
           for cls in KINDS.values()}


def from_stored(kind: str, data: dict):
    """The event a stored [kind, data] pair was; logs stored before typed events had
    `start` without a provider and `usage` with `estimated` and `total_tokens`, and older
    `start`s carry fields the event has since dropped (run_id, created, thread_id…)."""
    if kind == "usage":
        data = {k: v for k, v in data.items() if k not in ("total_tokens", "estimated")}
    cls = KINDS[kind]
    if cls is Start:
        data = {"model": "", "provider": {}, **data}
    return cls(**{k: v for k, v in data.items() if k in cls.__slots__})


def weight(event) -> int:
    """An event's weight for the buffer and log bounds: its text plus framing."""
    text = getattr(event, "text", None) or getattr(event, "arguments", None)
    return OVERHEAD + (len(text) if isinstance(text, str) else 0)


OVERHEAD = 160   # about what an event costs on the wire beyond its text
