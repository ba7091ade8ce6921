"""`rnnspec lsp`: the language server, on stdin/stdout, for any LSP-capable editor."""

from __future__ import annotations

import argparse
import sys

HELP = "run the language server on stdin/stdout (for editors)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # Editors' LSP clients often pass --stdio; it is the only transport.
    parser.add_argument("--stdio", action="store_true", help="the default; accepted")


def run(args: argparse.Namespace) -> int:
    try:
        from rnnspec.server.app import serve
    except ImportError as exc:  # pygls or lsprotocol missing
        print(
            f"rnnspec lsp needs pygls ({exc}); install it with: "
            "pip install 'rnnspec[lsp]'",
            file=sys.stderr,
        )
        return 1
    serve()
    return 0
