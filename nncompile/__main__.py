"""Allow `python -m nncompile`, the same as the `nncompile` command."""

from .cli import main

main()
