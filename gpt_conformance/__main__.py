"""``python -m gpt_conformance``: see ``harness/cli.py``."""

import sys

from gpt_conformance.harness.cli import main

sys.exit(main())
