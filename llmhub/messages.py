"""The input contract of the store: what a valid message and thread id are (DESIGN §6).

Dialects validate through `normalise_message`, so every message in the database has the
same shape: role, content (a string, null, or a list of typed parts), name, tool_call_id,
tool_calls, attachments, metadata, and reasoning (the model's thinking, kept with its
answer). Each failure is a 400 naming the field.
"""

from llmhub.errors import BadRequest
from llmhub.ids import SAFE_ID

__all__ = ["normalise_message", "check_thread_id", "check_metadata", "ROLES"]

ROLES = ("system", "user", "assistant", "tool")


def check_thread_id(thread_id, param: str = "threadId") -> str:
    if not isinstance(thread_id, str) or not SAFE_ID.match(thread_id):
        raise BadRequest(f"'{param}' must be 1-128 letters, digits or _ . : -", param=param)
    return thread_id


def normalise_message(message, where: str = "messages[0]") -> dict:
    """Validate one input message; return it with every optional field present."""
    if not isinstance(message, dict):
        raise BadRequest(f"'{where}' must be an object", param=where)
    if message.get("role") not in ROLES:
        raise BadRequest(f"'{where}.role' must be one of {', '.join(ROLES)}",
                         param=f"{where}.role")
    content = message.get("content")
    if not (content is None or isinstance(content, str) or _is_parts(content)):
        raise BadRequest(f"'{where}.content' must be a string, null, or a list of parts "
                         "with a 'type'", param=f"{where}.content")
    for field in ("name", "tool_call_id", "reasoning"):
        if message.get(field) is not None and not isinstance(message[field], str):
            raise BadRequest(f"'{where}.{field}' must be a string", param=f"{where}.{field}")
    for field in ("tool_calls", "attachments"):
        if message.get(field) is not None and not isinstance(message[field], list):
            raise BadRequest(f"'{where}.{field}' must be a list", param=f"{where}.{field}")
    metadata = check_metadata(message.get("metadata"), f"{where}.metadata")
    return {"role": message["role"], "content": content, "name": message.get("name"),
            "tool_call_id": message.get("tool_call_id"),
            "tool_calls": message.get("tool_calls") or [],
            "attachments": message.get("attachments") or [], "metadata": metadata,
            "reasoning": message.get("reasoning")}


def check_metadata(metadata, param: str = "metadata") -> dict:
    if metadata is None:
        return {}
    if not isinstance(metadata, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise BadRequest(f"'{param}' must map strings to strings", param=param)
    return metadata


def _is_parts(content) -> bool:
    return isinstance(content, list) and all(
        isinstance(p, dict) and isinstance(p.get("type"), str) for p in content)


