"""The SQLite store: one Database (database.py: connections, transactions, migrations,
upkeep) and one store per concern over it: threads.py (threads, messages, summaries),
responses.py (stored responses and their chains), requests.py (the request log and usage)."""
