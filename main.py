"""Start llmhub: `python main.py [--port 8000] [--upstream mock] ...` (see README.md)."""

import sys

if sys.version_info < (3, 10):
    sys.exit("llmhub needs Python 3.10 or newer")

from llmhub.cli import main  # noqa: E402  (after the version check, on purpose)

if __name__ == "__main__":
    sys.exit(main())
