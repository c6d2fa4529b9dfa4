"""Field checks shared by the dialects: each failure is a 400 that names the field."""

from llmhub.errors import BadRequest

__all__ = ["check_type", "check_number", "check_int", "check_sampling", "check_known",
           "SAMPLING"]

# The OpenAI generation fields the chat dialects pass upstream.
SAMPLING = {"temperature", "top_p", "n", "stop", "max_tokens", "max_completion_tokens",
            "presence_penalty", "frequency_penalty", "logit_bias", "logprobs", "top_logprobs",
            "seed", "tools", "tool_choice", "parallel_tool_calls", "response_format",
            "stream_options", "user", "reasoning_effort", "service_tier", "store", "metadata"}


def check_type(body: dict, name: str, types, what: str) -> None:
    value = body.get(name)
    if value is None:
        return
    # bool is an int in Python; JSON true is not a number
    if not isinstance(value, types) or (isinstance(value, bool) and types is not bool):
        raise BadRequest(f"'{name}' must be {what}, not {type(value).__name__}", param=name,
                         code="invalid_type")


def check_number(body: dict, name: str, lo: float, hi: float) -> None:
    check_type(body, name, (int, float), "a number")
    value = body.get(name)
    if value is not None and not lo <= value <= hi:
        raise BadRequest(f"'{name}' must be between {lo} and {hi}, not {value}", param=name,
                         code="invalid_value")


def check_int(body: dict, name: str, lo: int | None) -> None:
    check_type(body, name, int, "a whole number")
    value = body.get(name)
    if value is not None and lo is not None and value < lo:
        raise BadRequest(f"'{name}' must be at least {lo}, not {value}", param=name,
                         code="invalid_value")


def check_sampling(body: dict) -> None:
    """The OpenAI generation fields every chat dialect passes upstream."""
    check_type(body, "model", str, "a string")
    check_type(body, "stream", bool, "true or false")
    check_number(body, "temperature", 0, 2)
    check_number(body, "top_p", 0, 1)
    check_number(body, "presence_penalty", -2, 2)
    check_number(body, "frequency_penalty", -2, 2)
    check_int(body, "max_tokens", -1)           # LM Studio takes -1 for "no limit"
    check_int(body, "max_completion_tokens", 1)
    check_int(body, "seed", None)
    check_type(body, "stop", (str, list), "a string or a list of strings")
    check_type(body, "tools", list, "a list")
    check_type(body, "tool_choice", (str, dict), "a string or an object")
    check_type(body, "response_format", dict, "an object")
    check_type(body, "stream_options", dict, "an object")
    check_int(body, "n", 1)           # n > 1 goes upstream; a thread keeps choice 0


def check_known(body: dict, known: set, where: str = "") -> None:
    """A field the dialect does not know is a mistake (a typo silently ignored is worse)."""
    for name in body:
        if name not in known:
            field = f"{where}.{name}" if where else name
            raise BadRequest(f"Unknown field '{field}'", param=field, code="unknown_field")
