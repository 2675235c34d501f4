"""The ``autoapprove`` entry point (``python cli.py ...`` works the same).

The command line lives in ``engine.cli``; this shim runs it and exits with the code it returns.
"""

import sys

from engine.cli import build_parser, main, parse_now

__all__ = ["build_parser", "main", "parse_now"]

if __name__ == "__main__":
    sys.exit(main())
