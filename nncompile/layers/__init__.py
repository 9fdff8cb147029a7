"""Layer registry entries, one module per layer (or per family of one-line elementwise layers).

Importing this package registers every layer; add a new module to the list below.
"""

# This order is the order of docs/layers.md.
from . import (
    linear,
    conv,
    conv2d,
    pooling,
    pooling2d,
    flatten,
    shape,
    activations,
    softmax,
    merge,
    normalization,
    embedding,
)  # noqa: F401, I001
