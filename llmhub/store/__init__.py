"""The SQLite store: threads, messages, summaries, responses and the request log."""
