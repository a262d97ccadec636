"""The old entry point, kept so existing commands keep working: it runs the side-by-side comparison.

``bench/compare.py`` replaced this file's own bench (a minimal aiohttp upstream, the gateway per store, wrk -t2
-c32). Every option it had (--duration, --connections, --rounds, --stores, --profile, --baseline) means the same
there; the defaults are now the issue's (wrk -t1 -c50, nginx upstream, Apache + mod_auth_openidc beside).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from compare import main

if __name__ == "__main__":
    sys.exit(main())
