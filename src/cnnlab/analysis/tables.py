"""Tables of strings rendered twice: with rich for the console and as markdown for the report
files, so what is printed and what is written are the same numbers."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)
    # Columns (by index) holding text, left-aligned; numbers are right-aligned.
    text_columns: tuple[int, ...] = (0,)

    def add(self, *cells: object) -> None:
        self.rows.append([str(c) for c in cells])

    def to_rich(self):  # -> rich.table.Table (rich is imported only where printing happens)
        from rich.table import Table as RichTable

        table = RichTable(title=self.title, title_justify="left", show_lines=False)
        for i, column in enumerate(self.columns):
            table.add_column(column, justify="left" if i in self.text_columns else "right")
        for row in self.rows:
            table.add_row(*row)
        return table

    def to_markdown(self) -> str:
        def escape(cell: str) -> str:
            return cell.replace("|", "\\|")

        align = [":--" if i in self.text_columns else "--:" for i in range(len(self.columns))]
        lines = [
            f"### {self.title}",
            "",
            "| " + " | ".join(escape(c) for c in self.columns) + " |",
            "| " + " | ".join(align) + " |",
        ]
        lines += ["| " + " | ".join(escape(c) for c in row) + " |" for row in self.rows]
        return "\n".join(lines) + "\n"


def count(n: int | float) -> str:
    """12,345,678"""
    return f"{int(n):,}"


def mb(n_bytes: float) -> str:
    """Bytes as MiB with enough digits for small layers (0.018 MB)."""
    value = n_bytes / 2**20
    return f"{value:,.1f}" if value >= 10 else f"{value:.3f}"


def si(value: float, unit: str = "") -> str:
    """1.23 G, 456.0 M, 12.3 k (FLOPs, FLOP/s)."""
    for factor, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.2f} {prefix}{unit}"
    return f"{value:.0f} {unit}".rstrip()


def percent(share: float) -> str:
    return f"{100 * share:.1f}%"


def shape(dims: list[int] | None) -> str:
    return "not run" if dims is None else "x".join(str(d) for d in dims)
