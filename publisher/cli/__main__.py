"""`python -m publisher.cli` is the `publisher` command (as `python -m publisher` is)."""

import sys

from publisher.cli import main

sys.exit(main())
