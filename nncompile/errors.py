"""Diagnostics: source spans, located error messages, and their rendering.

Every stage reports problems as `Diagnostic`s; the CLI prints them as `FILE:LINE:COL: error: ...` with the source
line and a caret underline, then `help:` and `note:` lines.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

# Source lines longer than this are shown as a window around the span, so a huge line never floods the terminal.
MAX_SHOWN_LINE = 120


@dataclass(frozen=True)
class Span:
    """A region of source text: 1-based line and column, end column exclusive."""

    line: int
    column: int
    end_line: int
    end_column: int

    @classmethod
    def of(cls, meta_or_token) -> Span:
        """Build a span from a lark token or a tree's `meta` (parsed with propagate_positions)."""
        return cls(meta_or_token.line, meta_or_token.column, meta_or_token.end_line, meta_or_token.end_column)

    @classmethod
    def point(cls, line: int, column: int) -> Span:
        """One character wide: where something is missing."""
        return cls(line, column, line, column + 1)

    def to(self, other: Span) -> Span:
        """The span from the start of `self` to the end of `other`."""
        return Span(self.line, self.column, other.end_line, other.end_column)

    def __str__(self) -> str:
        return f"{self.line}:{self.column}"


@dataclass
class Diagnostic:
    """One problem in the user's input: what is wrong, where, and how to fix it."""

    message: str
    span: Span | None = None
    notes: list[str] = field(default_factory=list)
    helps: list[str] = field(default_factory=list)
    # "error", or "warning" for legal code that is almost surely a mistake.
    severity: str = "error"

    def sort_key(self) -> tuple[int, int]:
        return (self.span.line, self.span.column) if self.span else (0, 0)

    def to_dict(self) -> dict:
        """Structured form, for tools and tests: message, position, help and notes."""
        span = None
        if self.span:
            span = {k: getattr(self.span, k) for k in ("line", "column", "end_line", "end_column")}
        return {
            "severity": self.severity,
            "message": self.message,
            "span": span,
            "helps": list(self.helps),
            "notes": list(self.notes),
        }


class CompileError(Exception):
    """Compilation failed; carries every diagnostic found, sorted by position."""

    def __init__(
        self, diagnostics: list[Diagnostic], filename: str = "<string>", source: str = "", truncated: bool = False
    ):
        unique = []
        for diag in diagnostics:
            if diag not in unique:
                unique.append(diag)
        self.diagnostics = sorted(unique, key=Diagnostic.sort_key)
        self.filename = filename
        self.source = source
        self.truncated = truncated
        super().__init__(self.render())

    def render(self) -> str:
        parts = [render_diagnostic(d, self.filename, self.source) for d in self.diagnostics]
        if self.truncated:
            shown = len(self.diagnostics)
            parts.append(f"{display_name(self.filename)}: note: too many errors; only the first {shown} are shown")
        return "\n".join(parts)


class Reporter:
    """Collects diagnostics so one run can report several independent errors (up to `limit`)."""

    limit = 20

    def __init__(self, filename: str = "<string>", source: str = ""):
        self.filename = filename
        self.source = source
        self.diagnostics: list[Diagnostic] = []
        self.warnings: list[Diagnostic] = []

    def error(self, message: str, span: Span | None = None, *, notes=(), helps=()) -> None:
        self.add(Diagnostic(message, span, list(notes), list(helps)))

    def warning(self, message: str, span: Span | None = None, *, notes=(), helps=()) -> None:
        """Legal but almost surely a mistake: reported, never fatal. The same warning twice is kept once."""
        diagnostic = Diagnostic(message, span, list(notes), list(helps), severity="warning")
        if diagnostic not in self.warnings:
            self.warnings.append(diagnostic)

    def render_warnings(self) -> str:
        """The warnings sorted by position, rendered like errors ('' when there are none)."""
        ordered = sorted(self.warnings, key=Diagnostic.sort_key)
        return "\n".join(render_diagnostic(d, self.filename, self.source) for d in ordered)

    def add(self, diagnostic: Diagnostic) -> None:
        self.diagnostics.append(diagnostic)
        if len(self.diagnostics) >= self.limit:
            raise CompileError(self.diagnostics, self.filename, self.source, truncated=True)

    def raise_if_any(self) -> None:
        if self.diagnostics:
            raise CompileError(self.diagnostics, self.filename, self.source)


def source_lines(source: str) -> list[str]:
    """The lines as the parser counts them: only '\\n' ends a line (a form feed or '\\x85' does not)."""
    return [line.removesuffix("\r") for line in source.split("\n")]


def _printable(text: str) -> str:
    """Make a source line safe for a terminal without moving columns: tabs and control characters become one cell."""
    return "".join(" " if c == "\t" else "\N{REPLACEMENT CHARACTER}" if not c.isprintable() else c for c in text)


def display_name(path) -> str:
    """A file name (str, bytes or path) safe to print: control, bidi and other non-printable characters are escaped as
    repr() escapes them (`\\n`, `\\x1b`, `\\u202e`, `\\udcff` for an undecodable byte), without quotes."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in os.fsdecode(path))


def shorten(text: str, limit: int = 40) -> str:
    """A token for a message, cut with '…' when it is long."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def render_diagnostic(diag: Diagnostic, filename: str, source: str) -> str:
    """Format one diagnostic like a compiler: location, message, source line, caret underline, help/notes."""
    filename = display_name(filename)
    if diag.span is None:
        lines = [f"{filename}: {diag.severity}: {diag.message}"]
    else:
        span = diag.span
        lines = [f"{filename}:{span.line}:{span.column}: {diag.severity}: {diag.message}"]
        all_lines = source_lines(source)
        if 1 <= span.line <= len(all_lines):
            text = _printable(all_lines[span.line - 1])
            end = span.end_column if span.end_line == span.line else len(text) + 1
            start = min(span.column, len(text) + 1)
            width = max(1, end - start)
            lines += _excerpt(span.line, text, start, width)
    lines += [f"  help: {h}" for h in diag.helps]
    lines += [f"  note: {n}" for n in diag.notes]
    return "\n".join(lines)


def _excerpt(line_number: int, text: str, column: int, width: int) -> list[str]:
    """The source line and the caret line under columns [column, column + width)."""
    if len(text) > MAX_SHOWN_LINE:
        # Show a window that starts a little before the span, marking the cut ends with '…'.
        width = min(width, MAX_SHOWN_LINE - 20)
        first = max(0, column - 1 - 20)
        window = text[first : first + MAX_SHOWN_LINE]
        prefix = "…" if first > 0 else ""
        suffix = "…" if first + MAX_SHOWN_LINE < len(text) else ""
        text = prefix + window + suffix
        column = column - first + len(prefix)
    gutter = f"{line_number:>4} | "
    return [gutter + text, " " * (len(gutter) - 2) + "| " + " " * (column - 1) + "^" * width]


def edit_distance(a: str, b: str) -> int:
    """Optimal string alignment distance: insertions, deletions, substitutions and adjacent transpositions."""
    previous2: list[int] = []
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i] + [0] * len(b)
        for j, cb in enumerate(b, 1):
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb))
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                current[j] = min(current[j], previous2[j - 2] + 1)
        previous2, previous = previous, current
    return previous[-1]


def close_matches(name: str, candidates) -> list[str]:
    """The candidates closest to `name`, compared case-insensitively; empty when nothing is close.

    Close means: the same up to case; else the nearest within an edit distance of about a third of the name (at
    least 1, at most 3); else the (at most three) candidates that start with the name, for names of 3+ letters.
    """
    if len(name) > 100:
        return []
    by_lower: dict[str, str] = {}
    for candidate in sorted(candidates):
        by_lower.setdefault(candidate.lower(), candidate)
    wanted = name.lower()
    if wanted in by_lower:
        return [by_lower[wanted]]
    allowed = max(1, min(3, len(wanted) // 3))
    scored = sorted((edit_distance(wanted, lower), lower) for lower in by_lower)
    if scored and scored[0][0] <= allowed:
        return [by_lower[scored[0][1]]]
    prefixed = [by_lower[lower] for lower in by_lower if lower.startswith(wanted)]
    if len(wanted) >= 3 and 1 <= len(prefixed) <= 3:
        return prefixed
    return []


def did_you_mean(name: str, candidates) -> str | None:
    """The single closest candidate, or None."""
    matches = close_matches(name, candidates)
    return matches[0] if matches else None


def did_you_mean_help(name: str, candidates) -> list[str]:
    """`["did you mean 'LeakyReLU'?"]`, `["did you mean 'a' or 'b'?"]`, or no help at all."""
    matches = [f"'{m}'" for m in close_matches(name, candidates)]
    if not matches:
        return []
    listed = matches[0] if len(matches) == 1 else ", ".join(matches[:-1]) + " or " + matches[-1]
    return [f"did you mean {listed}?"]
