"""Torch building blocks of every rnnspec model.

Each module here imports only torch and the standard library, so that the code
generator can inline the pieces a spec needs into a standalone file: this package
is the single source of truth for the math, shared by `instantiate` and `generate`.
"""
