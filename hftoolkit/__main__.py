"""`python -m hftoolkit` runs the CLI."""

import sys

from hftoolkit.cli import main

sys.exit(main())
