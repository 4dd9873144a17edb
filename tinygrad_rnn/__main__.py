"""`python -m tinygrad_rnn ...` is the `tinygrad-rnn` command (see cli.py)."""

import sys

from .cli import main

sys.exit(main())
