"""API dialects: each translates its wire format to a ChatRequest and renders run events back.

A dialect module provides its views and `error_body(HubError) -> dict`, its error shape.
Dialects never talk to an upstream or the database directly (DESIGN §2).
"""
