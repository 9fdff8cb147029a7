"""Rewrite every tests/golden/NAME.py from its NAME.nn; run `python tests/regenerate_golden.py`, then read the diff."""

from __future__ import annotations

from pathlib import Path

import nncompile

GOLDEN = Path(__file__).resolve().parent / "golden"


def expected_code(nn_file: Path) -> str:
    # A relative filename keeps absolute paths out of the generated comments.
    return nncompile.compile_source(nn_file.read_text(encoding="utf-8"), dtype="float32", filename=nn_file.name)


def main() -> None:
    for nn_file in sorted(GOLDEN.glob("*.nn")):
        target = nn_file.with_suffix(".py")
        target.write_text(expected_code(nn_file), encoding="utf-8")
        print(f"wrote {target.relative_to(GOLDEN.parent.parent)}")


if __name__ == "__main__":
    main()
