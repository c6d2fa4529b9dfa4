"""API dialects: each translates its wire format to a ChatRequest and renders run events back.

A dialect module provides its views, `TITLE` (its name in /help), and
`error_body(HubError)`, its error shape: a dict, or `(status, dict)` where the dialect's
wire contract restates the status too. Dialects never talk to an upstream or the database
directly (DESIGN §2).
"""
