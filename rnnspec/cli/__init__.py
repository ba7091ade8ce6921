"""The `rnnspec` command line: one module per command, `main` dispatching."""

from rnnspec.cli.main import main

__all__ = ["main"]
