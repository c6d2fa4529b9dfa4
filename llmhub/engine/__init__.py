"""The engine: runs, their generation, admission, routing and upkeep; the one façade dialects call."""
