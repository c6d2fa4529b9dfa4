"""OpenAI's Conversations API (`/v1/conversations…`): a second face of the thread store.

A conversation is a thread: its id is the thread's own (`conv_<hex>` when the hub makes
one), so the same conversation shows in the Langbase threads API and on the web page, and
`/v1/responses` with `conversation` appends to it. Items are the thread's messages as
Responses items (response_items.py): one per message, one per tool call. Errors are OpenAI's.

OpenAI's limits hold here too, with its 400s: at most 20 items per create or add-items call
(more go in several calls), and metadata of at most 16 keys, keys up to 64 characters,
values strings up to 512 (dialects/checks.py).
"""

import functools

from llmhub import ids
from llmhub.dialects.checks import check_at_most, check_known, check_openai_metadata
from llmhub.dialects.openai import error_body
from llmhub.dialects.openai_responses import page, page_args
from llmhub.errors import BadRequest, NotFound
from llmhub.formats.response_items import items_to_messages, messages_to_items
from llmhub.messages import check_metadata, check_thread_id, normalise_message
from llmhub.wire import JSONResponse, cursor_page

__all__ = ["TITLE", "error_body", "create", "retrieve", "update", "delete", "list_items",
           "create_items", "get_item", "delete_item"]

TITLE = "OpenAI Conversations"
MAX_ITEMS = 20     # per create or add-items call, as OpenAI takes


def in_openai_words(view):
    """A conversation is a thread, and the store says an unknown one is missing in
    Langbase's words ("Thread … not found", param threadId); an OpenAI client reads OpenAI's,
    as for a response."""
    @functools.wraps(view)
    def answered(request, conversation_id: str, **rest):
        try:
            return view(request, conversation_id, **rest)
        except NotFound as error:
            if error.param != "threadId":
                raise
            raise NotFound(f"Conversation with id '{conversation_id}' not found.",
                           param="conversation_id", code="conversation_not_found") from None
    return answered


def conversation_json(thread: dict) -> dict:
    return {"id": thread["id"], "object": "conversation", "created_at": thread["created_at"],
            "metadata": thread["metadata"]}


def create(request) -> JSONResponse:
    body = request.json_object() if request.body.strip() else {}
    check_known(body, {"items", "metadata"})
    check_openai_metadata(body.get("metadata"))
    messages = parse_items(body.get("items") or [])
    thread = request.hub.engine.create_thread("conv_" + ids.uuid4().hex + ids.uuid4().hex[:16],
                                              check_metadata(body.get("metadata")), messages)
    return JSONResponse(conversation_json(thread))


@in_openai_words
def retrieve(request, conversation_id: str) -> JSONResponse:
    return JSONResponse(conversation_json(request.hub.engine.thread(
        check_thread_id(conversation_id, "conversation_id"))))


@in_openai_words
def update(request, conversation_id: str) -> JSONResponse:
    body = request.json_object()
    if "metadata" not in body:
        raise BadRequest("'metadata' is required", param="metadata")
    check_openai_metadata(body["metadata"])
    thread = request.hub.engine.update_thread(check_thread_id(conversation_id,
                                                              "conversation_id"),
                                              check_metadata(body["metadata"]))
    return JSONResponse(conversation_json(thread))


@in_openai_words
def delete(request, conversation_id: str) -> JSONResponse:
    request.hub.engine.delete_thread(check_thread_id(conversation_id, "conversation_id"))
    return JSONResponse({"id": conversation_id, "object": "conversation.deleted",
                         "deleted": True})


@in_openai_words
def list_items(request, conversation_id: str) -> JSONResponse:
    """A page of items, read from the store a page at a time: every message is at least one
    item, so `limit` + 1 messages past the one `after` names fill the page and tell whether
    more follow, however long the conversation."""
    thread_id = check_thread_id(conversation_id, "conversation_id")
    limit, order = page_args(request.query)
    after = request.query.get("after") or None
    messages = request.hub.engine.messages_from(
        thread_id, message_of(after) if after else None, limit + 2, order == "desc")
    if messages is None:
        raise BadRequest(f"'after' names no item: {after!r}", param="after")
    items = messages_to_items(messages[::-1] if order == "desc" else messages)
    return JSONResponse(page(items[::-1] if order == "desc" else items, request.query,
                             ordered=True))


@in_openai_words
def create_items(request, conversation_id: str) -> JSONResponse:
    body = request.json_object()
    check_known(body, {"items"})
    messages = parse_items(body.get("items"))
    created = request.hub.engine.append_messages(check_thread_id(conversation_id,
                                                                 "conversation_id"), messages)
    return JSONResponse(cursor_page(messages_to_items(created), has_more=False))


@in_openai_words
def get_item(request, conversation_id: str, item_id: str) -> JSONResponse:
    thread_id = check_thread_id(conversation_id, "conversation_id")
    messages = request.hub.engine.messages_from(thread_id, message_of(item_id), 1) or []
    item = next((i for i in messages_to_items(messages) if i["id"] == item_id), None)
    if item is None:
        raise NotFound(f"No item {item_id!r} in conversation {conversation_id!r}",
                       param="item_id")
    return JSONResponse(item)


@in_openai_words
def delete_item(request, conversation_id: str, item_id: str) -> JSONResponse:
    """Removes the message the item is (a tool call's item: its whole message)."""
    thread_id = check_thread_id(conversation_id, "conversation_id")
    request.hub.engine.delete_message(thread_id, message_of(item_id))
    return JSONResponse(conversation_json(request.hub.engine.thread(thread_id)))


def message_of(item_id: str) -> str:
    """The message an item id names: itself, or rs_<message>, or fc_<message>_<n>."""
    if item_id.startswith("fc_"):
        return item_id[3:].rpartition("_")[0]
    return item_id.removeprefix("rs_")


def parse_items(items) -> list[dict]:
    if not isinstance(items, list):
        raise BadRequest("'items' must be a list of items", param="items")
    check_at_most(items, MAX_ITEMS, "items")
    return [normalise_message(m, f"items[{i}]")
            for i, m in enumerate(items_to_messages(items, "items"))]
