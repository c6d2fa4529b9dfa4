"""Field checks shared by the dialects: each failure is a 400 that names the field."""

import base64

from llmhub.errors import BadRequest

__all__ = ["check_type", "check_number", "check_int", "check_sampling", "check_known",
           "check_openai_metadata", "check_at_most", "decoded_size", "decoded_head",
           "query_int", "SAMPLING"]

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


def query_int(raw: str | None, name: str, default: int, lo: int = 1, hi: int | None = None,
              code: str | None = None) -> int:
    """A whole number from a query string or header (`limit`, `Last-Event-ID`): `default`
    when absent or empty, else ASCII digits from `lo` to `hi`. isdigit() alone takes "²"
    (int() refuses it), and int() of thousands of digits raises (int_max_str_digits): both
    are a 400 naming the parameter, never a 500."""
    if raw is None or raw == "":
        return default
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 15) or int(raw) < lo or \
            hi is not None and int(raw) > hi:
        range_ = f"from {lo} to {hi}" if hi is not None else f"{lo} or more"
        raise BadRequest(f"'{name}' must be a whole number {range_}", param=name, code=code)
    return int(raw)


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


# OpenAI's limits on `metadata` (Responses, Conversations): "Set of 16 key-value pairs …
# Keys are strings with a maximum length of 64 characters. Values are strings with a
# maximum length of 512 characters." A client that passes here passes there.
METADATA_KEYS, METADATA_KEY_CHARS, METADATA_VALUE_CHARS = 16, 64, 512


def check_openai_metadata(metadata, param: str = "metadata") -> None:
    """A 400 in OpenAI's words for metadata OpenAI would refuse; None passes."""
    if metadata is None:
        return
    if not isinstance(metadata, dict):
        raise BadRequest(f"Invalid type for '{param}': expected an object, but got "
                         f"{type(metadata).__name__} instead.", param=param,
                         code="invalid_type")
    if len(metadata) > METADATA_KEYS:
        raise BadRequest(f"Invalid '{param}': too many properties. Expected an object with at "
                         f"most {METADATA_KEYS} properties, but got an object with "
                         f"{len(metadata)} properties instead.", param=param,
                         code="object_above_max_properties")
    for key, value in metadata.items():
        if len(key) > METADATA_KEY_CHARS:
            raise BadRequest(f"Invalid '{param}': key too long. Expected keys of at most "
                             f"{METADATA_KEY_CHARS} characters, but got a key of {len(key)} "
                             "characters instead.", param=param,
                             code="string_above_max_length")
        if not isinstance(value, str):
            raise BadRequest(f"Invalid type for '{param}.{key}': expected a string, but got "
                             f"{type(value).__name__} instead.", param=f"{param}.{key}",
                             code="invalid_type")
        if len(value) > METADATA_VALUE_CHARS:
            raise BadRequest(f"Invalid '{param}.{key}': string too long. Expected a string with "
                             f"maximum length {METADATA_VALUE_CHARS}, but got a string with "
                             f"length {len(value)} instead.", param=f"{param}.{key}",
                             code="string_above_max_length")


def check_at_most(items, most: int, param: str) -> None:
    """OpenAI's 400 for an array longer than the endpoint takes in one call."""
    if isinstance(items, list) and len(items) > most:
        raise BadRequest(f"Invalid '{param}': array too long. Expected an array with maximum "
                         f"length {most}, but got an array with length {len(items)} instead.",
                         param=param, code="array_above_max_length")


BASE64_STEP = 1 << 20          # characters checked at a time: a multiple of 4


def decoded_size(data: str) -> int:
    """How many bytes base64 text decodes to; ValueError if it is not base64, as
    `b64decode(validate=True)` judges it. Checked a megabyte at a time: decoding a large
    image whole would hold it twice more (as ASCII bytes, and decoded) beside the text."""
    if not data or len(data) % 4:
        raise ValueError("not base64")
    for start in range(0, len(data), BASE64_STEP):
        piece = data[start:start + BASE64_STEP]
        if "=" in piece and start + BASE64_STEP < len(data):
            raise ValueError("padding before the end")
        base64.b64decode(piece, validate=True)
    return len(data) // 4 * 3 - len(data[-2:]) + len(data[-2:].rstrip("="))


def decoded_head(data: str) -> bytes:
    """The first 48 bytes base64 text decodes to: enough to tell an image's type."""
    return base64.b64decode(data[:64])
