"""Tables as data: one ``Table`` renders to CSV, Markdown, HTML and a JSON record.

Cells are numbers, strings, booleans, ``None`` (shown as an empty cell / ``—``) or lists of
them. Floats, also inside lists, are formatted with ``float_fmt`` for Markdown/HTML only, where
a NaN (a value not measured or not defined, e.g. the std over seeds of a group with one seed)
shows as ``—``; CSV and JSON keep full precision and the NaN (JSON: null). JSON has no
infinity either: the JSON record writes ±inf as the strings ``"inf"`` / ``"-inf"``, not as
null, because its readers tell the two apart (the report page shows an infinite ratio as
``inf`` and a value not measured as ``—``; the comparison subtracts both as numbers). The
columns named in ``percent`` hold fractions that Markdown/HTML show as percentages (0.45 as
``45.0%``, as a paper's figure and the report's conclusions give a rate); CSV and JSON keep
the fraction.
"""
from __future__ import annotations

import csv
import html
import io
import math
import numbers
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

# how the JSON record writes +inf and -inf (JSON has no infinity)
INFINITIES = ("inf", "-inf")


@dataclass
class Table:
    name: str                      # file stem: <name>.csv / <name>.md
    columns: list[str]
    rows: list[list[Any]]
    caption: str = ""
    float_fmt: str = ".4g"
    notes: list[str] = field(default_factory=list)
    # the columns whose values name a row (its settings: lr, batch size, seed, ...): what a
    # comparison of two reports matches rows on (empty: the text cells and the first column)
    keys: list[str] = field(default_factory=list)
    # the columns of fractions shown as percentages (Markdown and HTML only)
    percent: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        for what, named in (("key", self.keys), ("percent", self.percent)):
            unknown = [k for k in named if k not in self.columns]
            if unknown:
                raise ValueError(f"table {self.name!r}: {what} column(s) "
                                 f"{', '.join(unknown)} are not among its columns")
        for i, r in enumerate(self.rows):
            if len(r) != len(self.columns):
                raise ValueError(f"table {self.name!r}: row {i} has {len(r)} cells, "
                                 f"expected {len(self.columns)}")

    # ------------------------------------------------------------------------------------
    def _fmt(self, v: Any) -> str:
        if v is None:
            return "—"
        if isinstance(v, bool):
            return "yes" if v else "no"
        if isinstance(v, numbers.Real) and not isinstance(v, numbers.Integral):
            if math.isnan(v):
                return "—"                 # not measured (CSV and JSON keep the NaN / null)
            return format(float(v), self.float_fmt)
        if isinstance(v, (list, tuple)):       # e.g. a point's coordinates, same precision
            return "[" + ", ".join(self._fmt(x) for x in v) + "]"
        return str(v)

    def _cell(self, i: int, v: Any) -> str:
        """Cell ``v`` of column ``i`` as shown: a fraction of a ``percent`` column in %."""
        if (self.columns[i] in self.percent and isinstance(v, numbers.Real)
                and not isinstance(v, bool) and math.isfinite(v)):
            return f"{100 * float(v):.1f}%"
        return self._fmt(v)

    def to_csv(self) -> str:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(self.columns)
        for r in self.rows:
            w.writerow(["" if v is None else v for v in r])
        return buf.getvalue()

    def to_markdown(self) -> str:
        def esc(s: str) -> str:
            return s.replace("|", "\\|")
        lines = []
        if self.caption:
            lines += [f"**{esc(self.caption)}**", ""]
        lines.append("| " + " | ".join(esc(c) for c in self.columns) + " |")
        # numbers right-aligned, as in the HTML page: digits of one place stand one above the
        # other in a rendered table
        lines.append("|" + "|".join("---:" if self._numeric(i) else "---"
                                    for i in range(len(self.columns))) + "|")
        for r in self.rows:
            lines.append("| " + " | ".join(esc(self._cell(i, v)) for i, v in enumerate(r))
                         + " |")
        for n in self.notes:
            lines += ["", f"_{esc(n)}_"]
        return "\n".join(lines) + "\n"

    def _numeric(self, i: int) -> bool:
        """Whether column ``i`` holds numbers only (None aside), at least one."""
        cells = [r[i] for r in self.rows if r[i] is not None]
        return bool(cells) and all(isinstance(v, numbers.Real) and not isinstance(v, bool)
                                   for v in cells)

    def to_html(self) -> str:
        head = "".join(f"<th>{html.escape(c)}</th>" for c in self.columns)
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(self._cell(i, v))}</td>"
                             for i, v in enumerate(r)) + "</tr>"
            for r in self.rows)
        cap = f"<caption>{html.escape(self.caption)}</caption>" if self.caption else ""
        notes = "".join(f"<p class='note'>{html.escape(n)}</p>" for n in self.notes)
        return f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{notes}"

    def to_json(self) -> dict[str, Any]:
        """The record in results.json: NaN as null, ±inf as ``"inf"`` / ``"-inf"`` (read back
        by :meth:`from_json`, shown as ``inf``; see the module docstring)."""
        def clean(v: Any) -> Any:
            if isinstance(v, float) and not math.isfinite(v):
                return None if math.isnan(v) else INFINITIES[v < 0]
            if isinstance(v, (list, tuple)):      # a list cell's infinities alike
                return [clean(x) for x in v]
            return v
        return {"name": self.name, "caption": self.caption, "columns": list(self.columns),
                "rows": [[clean(v) for v in r] for r in self.rows], "notes": list(self.notes),
                "keys": list(self.keys), "percent": list(self.percent)}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Table":
        return cls(name=d["name"], columns=list(d["columns"]),
                   rows=[list(r) for r in d["rows"]], caption=d.get("caption", ""),
                   notes=list(d.get("notes", [])), keys=list(d.get("keys", [])),
                   percent=list(d.get("percent", [])))

    def column(self, name: str) -> list[Any]:
        i = self.columns.index(name)
        return [r[i] for r in self.rows]


def exact_mean(values: list[float]) -> float:
    """The mean of finite floats rounded once from its exact value, so equal means compare
    equal: a run stuck at one value has mean exactly it whatever the count (a float sum
    gives 0.1 over two records and 0.10000000000000002 over three, and a strict claim would
    read that round-off as a rise). With an infinite value, the float mean; NaN if empty."""
    vals = [float(v) for v in values]
    if not vals:
        return float("nan")
    if not all(math.isfinite(v) for v in vals):
        return sum(vals) / len(vals)
    return float(sum(map(Fraction, vals)) / len(vals))


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean (:func:`exact_mean`) and sample standard deviation; NaNs ignored. The std of a
    single value is NaN, not 0: one seed measures no spread, and a 0 would read as seeds
    that agree (two equal values have std 0). A table shows it as ``—``, JSON as null."""
    vals = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    if not vals:
        return float("nan"), float("nan")
    m = exact_mean(vals)
    if len(vals) < 2:
        return m, float("nan")
    return m, math.sqrt(sum((v - m) ** 2 for v in vals) / (len(vals) - 1))
