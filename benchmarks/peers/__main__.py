"""``python -m benchmarks.peers``: the side-by-side run (see ``benchmarks.peers.compare``)."""

import sys

from benchmarks.peers.compare import main

sys.exit(main())
