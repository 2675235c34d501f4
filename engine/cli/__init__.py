"""The ``autoapprove`` command: the only package that prints and picks exit codes; it builds
the settings (``engine.config``, the one reader of the environment) once and passes them down.

``cli.py`` at the top level is the entry point; it calls :func:`main` and exits with the
code it returns. Nothing here calls ``sys.exit`` (argparse itself exits for ``--help`` and
bad arguments, with code 0 and 2).

Layout: ``app`` (the parser, the error-to-exit-code mapping), ``shared`` (exit codes,
output, the ``Context`` of a command: its settings), ``options`` (argument types and
shared options), and one module per command group: ``policy_cmds``, ``run_cmds``,
``store_cmds``, ``sandbox_cmds``. A new command is a new module with an ``add_NAME``
function, listed once in ``app.COMMANDS``. Heavy modules are imported inside the command
handlers so ``--help`` starts fast.
"""

from engine.cli.app import build_parser, main
from engine.cli.options import parse_interval, parse_now

__all__ = ["build_parser", "main", "parse_interval", "parse_now"]
