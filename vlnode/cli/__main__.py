"""``python -m vlnode.cli``: the same as the ``vlnode`` command."""

import sys

from vlnode.cli import main

sys.exit(main())
