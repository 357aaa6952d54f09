"""`python -m publisher` is the `publisher` command."""

import sys

from publisher.cli import main

sys.exit(main())
