"""Rewrite every tests/golden/NAME.py from its NAME.nn, and NAME.dot (Graphviz) for the DOT cases; run
`python tests/regenerate_golden.py`, then read the diff."""

from __future__ import annotations

from pathlib import Path

import nncompile
from nncompile.dot import to_dot

GOLDEN = Path(__file__).resolve().parent / "golden"
# The models whose `--emit dot` output is pinned too: a residual model (block clusters) and a multi-input one.
DOT_CASES = ("residual", "two_inputs")


def expected_code(nn_file: Path) -> str:
    # A relative filename keeps absolute paths out of the generated comments.
    return nncompile.compile_source(nn_file.read_text(encoding="utf-8"), dtype="float32", filename=nn_file.name)


def expected_dot(nn_file: Path) -> str:
    models = nncompile.compile_models(nn_file.read_text(encoding="utf-8"), filename=nn_file.name)
    return to_dot(models, filename=nn_file.name)


def main() -> None:
    for nn_file in sorted(GOLDEN.glob("*.nn")):
        target = nn_file.with_suffix(".py")
        target.write_text(expected_code(nn_file), encoding="utf-8")
        print(f"wrote {target.relative_to(GOLDEN.parent.parent)}")
    for name in DOT_CASES:
        target = GOLDEN / f"{name}.dot"
        target.write_text(expected_dot(GOLDEN / f"{name}.nn"), encoding="utf-8")
        print(f"wrote {target.relative_to(GOLDEN.parent.parent)}")


if __name__ == "__main__":
    main()
