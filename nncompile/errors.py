"""Diagnostics: source spans, located error messages, and their rendering.

Every stage reports problems as `Diagnostic`s; the CLI prints them as `FILE:LINE:COL: error: ...` with a caret line.
"""

from __future__ import annotations

from dataclasses import dataclass, field


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

    def to(self, other: Span) -> Span:
        """The span from the start of `self` to the end of `other`."""
        return Span(self.line, self.column, other.end_line, other.end_column)


@dataclass
class Diagnostic:
    """One problem in the user's input: what is wrong, where, and how to fix it."""

    message: str
    span: Span | None = None
    notes: list[str] = field(default_factory=list)
    helps: list[str] = field(default_factory=list)

    def sort_key(self) -> tuple[int, int]:
        return (self.span.line, self.span.column) if self.span else (0, 0)


class CompileError(Exception):
    """Compilation failed; carries every diagnostic found, in source order."""

    def __init__(self, diagnostics: list[Diagnostic], filename: str = "<string>", source: str = ""):
        self.diagnostics = sorted(diagnostics, key=Diagnostic.sort_key)
        self.filename = filename
        self.source = source
        super().__init__(self.render())

    def render(self) -> str:
        return "\n".join(render_diagnostic(d, self.filename, self.source) for d in self.diagnostics)


class Reporter:
    """Collects diagnostics so one run can report several independent errors."""

    limit = 20

    def __init__(self, filename: str = "<string>", source: str = ""):
        self.filename = filename
        self.source = source
        self.diagnostics: list[Diagnostic] = []

    def error(self, message: str, span: Span | None = None, *, notes=(), helps=()) -> None:
        self.diagnostics.append(Diagnostic(message, span, list(notes), list(helps)))
        if len(self.diagnostics) >= self.limit:
            self.raise_if_any()

    def raise_if_any(self) -> None:
        if self.diagnostics:
            raise CompileError(self.diagnostics, self.filename, self.source)


def render_diagnostic(diag: Diagnostic, filename: str, source: str) -> str:
    """Format one diagnostic like a compiler: location, message, source line, caret underline, help/notes."""
    if diag.span is None:
        lines = [f"{filename}: error: {diag.message}"]
    else:
        span = diag.span
        lines = [f"{filename}:{span.line}:{span.column}: error: {diag.message}"]
        source_lines = source.splitlines()
        if 1 <= span.line <= len(source_lines):
            text = source_lines[span.line - 1].expandtabs(1)
            end = span.end_column if span.end_line == span.line else len(text) + 1
            width = max(1, end - span.column)
            gutter = f"{span.line:>4} | "
            lines.append(gutter + text)
            lines.append(" " * (len(gutter) - 2) + "| " + " " * (span.column - 1) + "^" * width)
    lines += [f"  help: {h}" for h in diag.helps]
    lines += [f"  note: {n}" for n in diag.notes]
    return "\n".join(lines)


def did_you_mean(name: str, candidates) -> str | None:
    """The closest candidate to `name` (case-insensitive), or None when nothing is close."""
    import difflib

    by_lower = {c.lower(): c for c in candidates}
    match = difflib.get_close_matches(name.lower(), list(by_lower), n=1, cutoff=0.6)
    return by_lower[match[0]] if match else None
