"""The engine: runs, their generation, admission, routing and upkeep, behind the one façade
(facade.py) that dialects call."""
