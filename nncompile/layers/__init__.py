"""Layer registry entries, one module per layer (or per family of one-line elementwise layers).

Importing this package registers every layer; add a new module to the list below.
"""

from . import linear, activations  # noqa: F401, I001  (this order is the order of docs/layers.md)
