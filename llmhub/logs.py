"""Logging: one JSON line per request (DESIGN §11), or plain text for people.

Request lines carry their fields in `extra={"fields": {...}}`; the JSON formatter puts them at
the top level of the line, the text formatter appends them as key=value.
"""

import json
import logging
import sys

from llmhub.ids import utc_text

__all__ = ["setup", "JSONFormatter", "TextFormatter"]


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {"time": utc_text(record.created), "level": record.levelname.lower(),
                "logger": record.name, "message": record.getMessage()}
        line.update(getattr(record, "fields", {}))
        if record.exc_info:
            line["traceback"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = " ".join(f"{k}={v}" for k, v in getattr(record, "fields", {}).items()
                          if v is not None)
        text = f"{utc_text(record.created)} {record.levelname:<7} {record.getMessage()}"
        text = f"{text} {fields}" if fields else text
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


def setup(level: str = "info", fmt: str = "json", stream=None) -> None:
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JSONFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger("llmhub")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
