"""The rnnspec version, in one place: the package, CLI, codegen and build read it."""

__version__ = "0.1.0"
