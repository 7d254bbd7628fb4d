"""The papers' inline LaTeX (``$\\rho^{\\text{ss}} = e^{-\\Phi}$``) as readable HTML, for the
quotes report.html shows.

The quotes are kept verbatim in the catalogue (tests compare them with the paper texts); only
the page renders them. No dependency of sgdlab renders LaTeX to HTML (matplotlib's mathtext
draws glyphs), so this covers the commands the catalogue's quotes use: Greek letters and
symbols become Unicode, ``^{...}`` / ``_{...}`` become <sup> / <sub>, ``\\text{}`` /
``\\mathrm{}`` stay upright, Latin variables are set in italics, ``\\boldsymbol{}`` in bold,
``\\frac{a}{b}`` reads a/b. A command it does not know is shown as written, and a ``$...$``
it cannot read (an unbalanced brace) stays whole, dollars included: nothing is dropped.
Outside ``$...$`` the TeX the text extraction left unwrapped is rendered alone: a command
(``\\boldsymbol{H}``), and a sub/superscript where nothing else can be meant (``10^{-4}``,
``η_0``, ``θ_{GD}^*``: a braced group, or one character ending the word, after a lone letter, a
number, a closing bracket or a command); snake_case names (``zhu_2019.txt``, ``max_norm``),
addresses and code spans stay as written, and the rest of the text is only escaped.
"""
from __future__ import annotations

import html
import re

GREEK = {
    "alpha": "α", "beta": "β", "gamma": "γ", "delta": "δ", "epsilon": "ϵ",
    "varepsilon": "ε", "zeta": "ζ", "eta": "η", "theta": "θ", "vartheta": "ϑ", "iota": "ι",
    "kappa": "κ", "lambda": "λ", "mu": "μ", "nu": "ν", "xi": "ξ", "pi": "π", "rho": "ρ",
    "sigma": "σ", "tau": "τ", "upsilon": "υ", "phi": "ϕ", "varphi": "φ", "chi": "χ",
    "psi": "ψ", "omega": "ω", "Gamma": "Γ", "Delta": "Δ", "Theta": "Θ", "Lambda": "Λ",
    "Xi": "Ξ", "Pi": "Π", "Sigma": "Σ", "Upsilon": "Υ", "Phi": "Φ", "Psi": "Ψ", "Omega": "Ω",
}
SYMBOLS = {
    "pm": "±", "mp": "∓", "leq": "≤", "le": "≤", "geq": "≥", "ge": "≥", "neq": "≠",
    "approx": "≈", "sim": "∼", "equiv": "≡", "propto": "∝", "times": "×", "cdot": "·",
    "nabla": "∇", "partial": "∂", "infty": "∞", "in": "∈", "top": "⊤", "to": "→",
    "rightarrow": "→", "ldots": "…", "dots": "…", "cdots": "⋯", "sum": "∑", "prod": "∏",
    "int": "∫", "ell": "ℓ", "langle": "⟨", "rangle": "⟩", "Vert": "‖", "vert": "|",
    "mid": "|", "|": "‖", "%": "%", "{": "{", "}": "}", "_": "_", "&": "&", "#": "#",
    ",": "\u2009", ";": " ", ":": " ", " ": " ", "!": "", "quad": "\u2003",
}
RELATIONS = {"leq", "le", "geq", "ge", "neq", "approx", "sim", "equiv", "propto", "in", "to",
             "rightarrow"}
# set upright, as LaTeX sets them
OPERATORS = {"log", "ln", "exp", "min", "max", "arg", "sup", "inf", "lim", "det", "tr",
             "sin", "cos", "tan", "diag", "sign"}
UPRIGHT = {"text", "mathrm", "textrm", "operatorname", "textnormal"}
BOLD = {"boldsymbol", "mathbf", "bm", "textbf"}
DOUBLE_STRUCK = {"R": "ℝ", "N": "ℕ", "Z": "ℤ", "Q": "ℚ", "C": "ℂ", "E": "𝔼", "P": "ℙ"}
ACCENTS = {"hat": "\u0302", "bar": "\u0304", "tilde": "\u0303", "dot": "\u0307",
           "vec": "\u20d7"}
# `\left(` / `\right)`: only the delimiter shows
SIZING = {"left", "right", "big", "Big", "bigl", "bigr", "Bigl", "Bigr"}
# characters that set themselves apart in math: the minus sign, the prime
MATH_CHARS = {"-": "−", "'": "′"}

_MATH = re.compile(r"(?<!\\)\$([^$]+?)(?<!\\)\$")
_COMMAND = re.compile(r"\\([A-Za-z]+|.)")
# TeX the text extraction left outside the dollars (`\boldsymbol{H}`, `10^{-4}`, `η_0`,
# `θ_{GD}^*`), read only where nothing else is meant. A script is a braced group (one level of
# braces inside: `^{\text{ss}}`) or one letter, digit or `*` that ends the word (`η_0`, not
# `zhu_2019`); it follows a command, a lone letter (Latin or Greek: `y^k`, not `lr_a`), a number
# or a closing bracket. Possessive, so that a script is read whole or not at all.
_GROUP = r"\{[^{}$]*(?:\{[^{}$]*\}[^{}$]*)*\}"
_SCRIPTS = rf"(?:[\^_](?:{_GROUP}|[^\W_](?!\w)|\*))++"
_SCRIPT_BASE = r"(?:(?<![\w./\\])(?:[^\W\d_]|\d+(?:\.\d+)?)|[)\]])"
# nor is it the middle of a file name or an address (`x_1.txt`, `a_b@c.org`, `x_1/`)
_SCRIPTS_END = r"(?![\w@/]|\.\w)"
# an address or a code span stays as written, whatever it holds
_VERBATIM = r"[A-Za-z][A-Za-z0-9+.-]*://\S+|www\.\S+|`[^`]*`"
_LOOSE_TEX = re.compile(
    rf"(?P<verbatim>{_VERBATIM})|\\[A-Za-z]+(?:\{{[^{{}}$]*\}})*(?:{_SCRIPTS}{_SCRIPTS_END})?"
    rf"|{_SCRIPT_BASE}{_SCRIPTS}{_SCRIPTS_END}")


class _Unreadable(ValueError):
    """A math span this converter cannot parse (unbalanced braces)."""


def inline_math_html(text: str) -> str:
    """``text`` as HTML (escaped), its ``$...$`` spans and unwrapped LaTeX commands rendered
    (the module's docstring says how); what is not understood is shown as written."""
    out, at = [], 0
    for m in _MATH.finditer(text):
        out.append(_text_html(text[at:m.start()]))
        try:
            out.append(math_html(m.group(1)))
        except _Unreadable:
            out.append(html.escape(m.group(0)))
        at = m.end()
    out.append(_text_html(text[at:]))
    return "".join(out)


def _text_html(text: str) -> str:
    out, at = [], 0
    for m in _LOOSE_TEX.finditer(text):
        out.append(html.escape(text[at:m.start()]))
        try:
            out.append(html.escape(m.group(0)) if m.group("verbatim") else math_html(m.group(0)))
        except _Unreadable:
            out.append(html.escape(m.group(0)))
        at = m.end()
    out.append(html.escape(text[at:]))
    return "".join(out)


def math_html(source: str) -> str:
    """One math span's LaTeX (without its dollars) as HTML; raises :class:`_Unreadable` on
    unbalanced braces."""
    parsed, end = _Parser(source).sequence(0)
    if end != len(source):
        raise _Unreadable(f"unmatched '}}' in {source!r}")
    return parsed


class _Parser:
    def __init__(self, source: str):
        self.s = source

    def sequence(self, i: int) -> tuple[str, int]:
        """Atoms from ``i`` up to a closing brace (not consumed) or the end."""
        out = []
        while i < len(self.s) and self.s[i] != "}":
            piece, i = self.atom(i)
            out.append(piece)
        return "".join(out), i

    def group(self, i: int) -> tuple[str, int]:
        """``{...}`` at ``i`` (its inside rendered), or the one atom there."""
        if i < len(self.s) and self.s[i] == "{":
            inner, j = self.sequence(i + 1)
            if j >= len(self.s):
                raise _Unreadable(f"unclosed '{{' in {self.s!r}")
            return inner, j + 1
        if i >= len(self.s):
            raise _Unreadable(f"{self.s!r} ends where an argument is due")
        return self.atom(i)

    def raw_group(self, i: int) -> tuple[str, int]:
        """The source text of ``{...}`` at ``i`` (braces dropped), or of the one character."""
        if i < len(self.s) and self.s[i] == "{":
            depth = 0
            for j in range(i, len(self.s)):
                depth += {"{": 1, "}": -1}.get(self.s[j], 0)
                if depth == 0:
                    return self.s[i + 1:j], j + 1
            raise _Unreadable(f"unclosed '{{' in {self.s!r}")
        if i >= len(self.s):
            raise _Unreadable(f"{self.s!r} ends where an argument is due")
        return self.s[i], i + 1

    def atom(self, i: int) -> tuple[str, int]:
        c = self.s[i]
        if c == "{":
            return self.group(i)
        if c in "^_":
            arg, j = self.group(self._skip_spaces(i + 1))
            tag = "sup" if c == "^" else "sub"
            return f"<{tag}>{arg}</{tag}>", j
        if c == "\\":
            return self.command(i)
        if c.isascii() and c.isalpha():
            j = i
            while j < len(self.s) and self.s[j].isascii() and self.s[j].isalpha():
                j += 1
            return f"<i>{self.s[i:j]}</i>", j
        return html.escape(MATH_CHARS.get(c, c)), i + 1

    def command(self, i: int) -> tuple[str, int]:
        m = _COMMAND.match(self.s, i)
        if m is None:       # a lone backslash at the end
            return "\\", i + 1
        name, j = m.group(1), m.end()
        if name.isalpha() and self._spaces_dropped(name, i, j):
            j = self._skip_spaces(j)
        if name in GREEK:
            return GREEK[name], j
        if name in SYMBOLS:
            return html.escape(SYMBOLS[name]), j
        if name in OPERATORS:
            return name, j
        if name in SIZING:
            return "", j
        if name in UPRIGHT:
            text, k = self.raw_group(self._skip_spaces(j))
            if name == "text":
                return html.escape(text), k
            return self._upright(text), k
        if name in BOLD:
            arg, k = self.group(self._skip_spaces(j))
            return f"<b>{arg}</b>", k
        if name == "mathit":
            arg, k = self.group(self._skip_spaces(j))
            return f"<i>{arg}</i>", k
        if name == "mathbb":
            letter, k = self.raw_group(self._skip_spaces(j))
            if letter.strip() in DOUBLE_STRUCK:
                return DOUBLE_STRUCK[letter.strip()], k
        if name in ACCENTS:
            arg, k = self.group(self._skip_spaces(j))
            return arg + ACCENTS[name], k
        if name == "frac":
            top, k = self.raw_group(self._skip_spaces(j))
            bottom, k = self.raw_group(self._skip_spaces(k))
            return f"{self._operand(top)}/{self._operand(bottom)}", k
        if name == "sqrt":
            arg, k = self.raw_group(self._skip_spaces(j))
            return f"√{self._operand(arg)}", k
        return self._verbatim(i, j)

    def _verbatim(self, i: int, j: int) -> tuple[str, int]:
        """An unknown command as written, with the braced arguments that follow it."""
        while j < len(self.s) and self.s[j] == "{":
            _, j = self.raw_group(j)
        return html.escape(self.s[i:j]), j

    def _upright(self, source: str) -> str:
        """``\\mathrm{...}``: rendered, its letters not set in italics."""
        return re.sub(r"</?i>", "", math_html(source))

    @staticmethod
    def _operand(source: str) -> str:
        """A fraction's part rendered, in parentheses where it is more than one term."""
        rendered = math_html(source)
        top_level = source.strip()
        while re.search(r"\{[^{}]*\}", top_level):    # braced groups are one term
            top_level = re.sub(r"\{[^{}]*\}", "", top_level)
        return f"({rendered})" if re.search(r"[+\-=\s]", top_level) else rendered

    def _spaces_dropped(self, name: str, start: int, end: int) -> bool:
        """Whether the spaces after the control word ``name`` at ``start:end`` go: TeX drops
        them (``(\\pm 1, 0)`` reads (±1, 0)); kept where the source spaces the command on
        both sides (``1.37 \\pm 0.03``) and around a relation, which TeX spaces
        (``\\approx 95\\%``, ``\\lambda = 0.5``)."""
        nxt = self._skip_spaces(end)
        command_next = _COMMAND.match(self.s, nxt)
        relation_next = self.s[nxt:nxt + 1] in set("=<>+-,;:|") or (
            command_next is not None and command_next.group(1) in RELATIONS)
        return not (name in RELATIONS or relation_next
                    or (start > 0 and self.s[start - 1] == " "))

    def _skip_spaces(self, i: int) -> int:
        while i < len(self.s) and self.s[i] == " ":
            i += 1
        return i


__all__ = ["inline_math_html", "math_html"]
