"""`python -m llmhub` starts the hub, exactly like `python main.py`."""

import sys

from llmhub.cli import main

sys.exit(main())
