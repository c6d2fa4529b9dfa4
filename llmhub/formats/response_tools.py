"""Responses tools ↔ the chat functions every upstream takes (sans-IO).

The Responses API defines many tool types; a local model server runs functions only, so:

- `function` goes upstream as it is;
- `namespace` groups functions and custom tools: each goes upstream as a function named
  `<namespace>__<name>`, and a call to it comes back carrying `namespace` and its own name
  (the request's tools say which upstream name is which, so no name is ever guessed apart);
- `custom` (free-form text input, optionally held to a grammar, as Codex's `apply_patch` is)
  goes upstream as a function of one string argument, `input`, its grammar quoted in the
  description; a call comes back as a `custom_tool_call` carrying that string;
- every other type (`web_search`, `file_search`, `code_interpreter`, `image_generation`,
  `computer_use_preview`, `mcp`, `tool_search`, `local_shell`, `shell`, `apply_patch`, ...)
  needs the provider's own services: it is left out of the upstream request and named in
  the response's `X-Llmhub-Tools-Omitted` header, and the rest of the request runs.
"""

import json
from typing import Any
from dataclasses import dataclass

from llmhub.errors import BadRequest

__all__ = ["Toolbox", "upstream_name", "custom_arguments", "OMITTED_HEADER"]

SEPARATOR = "__"
OMITTED_HEADER = "X-Llmhub-Tools-Omitted"
RUN_HERE = ("function", "custom")     # the kinds a namespace may hold, too


@dataclass(frozen=True)
class Tool:
    kind: str                  # function or custom
    name: str
    namespace: str | None


def upstream_name(namespace: str | None, name: str) -> str:
    return f"{namespace}{SEPARATOR}{name}" if namespace else name


def custom_arguments(text: str) -> str:
    """A custom tool's free-form input as the arguments of the function it goes up as."""
    return json.dumps({"input": text}, ensure_ascii=False)


class Toolbox:
    """One request's tools: what goes upstream, what was left out, and how a call the model
    made reads back as a Responses item."""

    def __init__(self, tools) -> None:
        self.functions: list[dict] = []       # the chat `tools` sent upstream
        self.omitted: list[str] = []          # the types left out, in order, each once
        self.by_upstream: dict[str, Tool] = {}
        for i, tool in enumerate(tools or ()):
            self._add(tool, f"tools[{i}]", None)

    def _add(self, tool, at: str, namespace: str | None) -> None:
        kind = tool.get("type") if isinstance(tool, dict) else None
        if not isinstance(kind, str):
            raise BadRequest(f"'{at}.type' is required: a string", param=f"{at}.type")
        if kind == "namespace" and namespace is None:
            name = _name(tool, at)
            if not isinstance(tool.get("tools"), list):
                raise BadRequest(f"'{at}.tools' is required: a list of function or custom "
                                 "tools", param=f"{at}.tools")
            for j, inner in enumerate(tool["tools"]):
                self._add(inner, f"{at}.tools[{j}]", name)
        elif kind in RUN_HERE:
            entry = Tool(kind, _name(tool, at), namespace)
            self.by_upstream[upstream_name(namespace, entry.name)] = entry
            self.functions.append(_function(tool, entry))
        elif namespace is not None:
            raise BadRequest(f"'{at}.type' {kind!r} cannot be in a namespace: use function "
                             "or custom", param=f"{at}.type")
        elif kind not in self.omitted:
            self.omitted.append(kind)

    def choice(self, given):
        """`tool_choice` as the chat field, or None for the upstream's default. A choice of
        a tool that was left out falls back to the default: it cannot be forced here."""
        if given is None or isinstance(given, str):
            return given if self.functions else None
        kind = given.get("type") if isinstance(given, dict) else None
        if kind in RUN_HERE:
            name = upstream_name(given.get("namespace"), str(given.get("name")))
            if name not in self.by_upstream:
                raise BadRequest(f"'tool_choice.name' names no {kind} tool: {name!r}",
                                 param="tool_choice.name")
            return {"type": "function", "function": {"name": name}}
        if kind == "allowed_tools":
            return self._allow(given)
        return None

    def _allow(self, given: dict):
        """`allowed_tools`: only the named tools go upstream, with its mode as the choice."""
        listed = given.get("tools")
        if not isinstance(listed, list):
            raise BadRequest("'tool_choice.tools' is required: a list of tools",
                             param="tool_choice.tools")
        allowed = {upstream_name(t.get("namespace"), str(t.get("name")))
                   for t in listed if isinstance(t, dict)}
        self.functions = [f for f in self.functions if f["function"]["name"] in allowed]
        mode = given.get("mode", "auto")
        return mode if self.functions and mode in ("auto", "required") else None

    def call_item(self, key: str, index: int, call: dict, status: str = "completed") -> dict:
        """A call the model made (a chat `tool_calls` entry) as a Responses output item."""
        function = call.get("function") or {}
        name, arguments = function.get("name") or "", function.get("arguments") or ""
        tool = self.by_upstream.get(name)
        if tool is None:
            return {"id": f"fc_{key}_{index}", "type": "function_call", "status": status,
                    "call_id": call.get("id"), "name": name, "arguments": arguments}
        custom = tool.kind == "custom"
        item = {"id": f"{'ctc' if custom else 'fc'}_{key}_{index}",
                "type": "custom_tool_call" if custom else "function_call",
                "status": status, "call_id": call.get("id"), "name": tool.name}
        if custom:
            item["input"] = custom_input(arguments)
        else:
            item["arguments"] = arguments
        if tool.namespace:
            item["namespace"] = tool.namespace
        return item

    def is_custom(self, name: str) -> bool:
        tool = self.by_upstream.get(name)
        return tool is not None and tool.kind == "custom"


def _name(tool: dict, at: str) -> str:
    name = tool.get("name")
    if not isinstance(name, str) or not name:
        raise BadRequest(f"'{at}.name' is required: a string", param=f"{at}.name")
    return name


def _function(tool: dict, entry: Tool) -> dict:
    function: dict[str, Any] = {"name": upstream_name(entry.namespace, entry.name)}
    if entry.kind == "function":
        function.update({k: tool[k] for k in ("description", "parameters", "strict")
                         if tool.get(k) is not None})
        return {"type": "function", "function": function}
    function["description"] = _custom_description(tool)
    function["parameters"] = {"type": "object", "required": ["input"],
                              "properties": {"input": {"type": "string"}},
                              "additionalProperties": False}
    return {"type": "function", "function": function}


def _custom_description(tool: dict) -> str:
    """A custom tool's description, and its grammar: the model writes the input as text,
    so the format is all it has to go by."""
    text = tool.get("description") or ""
    fmt = tool["format"] if isinstance(tool.get("format"), dict) else {}
    if fmt.get("type") == "grammar" and isinstance(fmt.get("definition"), str):
        text += (f"\n\nPut the whole input in `input`, following this "
                 f"{fmt.get('syntax', 'lark')} grammar:\n{fmt['definition']}")
    return text.strip() or "Put the whole input, as free-form text, in `input`."


def custom_input(arguments: str) -> str:
    """The free-form text a custom tool call carries: the `input` the model wrote as its
    function's argument; what a model wrote some other way is passed on as it came."""
    try:
        parsed = json.loads(arguments)
    except ValueError:
        return arguments
    if isinstance(parsed, dict):
        if isinstance(parsed.get("input"), str):
            return parsed["input"]
        strings = [v for v in parsed.values() if isinstance(v, str)]
        if len(parsed) == 1 and strings:
            return strings[0]
    return arguments
