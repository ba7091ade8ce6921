"""Stage 2, the back ends: IR → torch modules (`runtime`) or PyTorch source (`codegen`).

Both evaluate the same constructor plan (`plan`) over the classes of `rnnspec.nn`;
`nnsource` indexes that package's source so codegen can copy what a model uses.
"""
