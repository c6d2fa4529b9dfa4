"""llmhub: one local hub for every LLM client on a machine.

Importing the package runs nothing; `python -m llmhub` or `python main.py` starts the hub.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
