"""``python -m idnode`` is the ``idnode`` command."""

import sys

from idnode.resolver.cli import main

sys.exit(main())
