"""The `rnnspec` command line: one module per command, `main` dispatching."""

from rnnspec.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
