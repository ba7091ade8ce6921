"""Subcommands that live with their feature (see rnnspec.cli)."""
