"""The papers' inline LaTeX in report.html's quotes: rendered readably, nothing dropped."""
from __future__ import annotations

import html

import pytest

from sgdlab.experiments.spec import catalogue_files, read_file
from sgdlab.report.html import quotes_html
from sgdlab.report.inline_math import inline_math_html


def _catalogue_quotes():
    """(entry, where, quote) of every quote of the catalogue, verbatim as the files hold it."""
    for name, path in catalogue_files().items():
        paper = read_file(path)["paper"]
        pairs = ([paper] if paper.get("quote") else []) + list(paper.get("quotes", []))
        for q in pairs:
            yield name, q["where"], q["quote"]


def test_every_catalogue_quote_shows_its_math_without_dollars_or_backslashes():
    with_latex = [(n, w, q) for n, w, q in _catalogue_quotes() if "$" in q or "\\" in q]
    assert len(with_latex) >= 12        # the catalogue's quotes do use inline LaTeX
    raw = [f"{n} ({w})" for n, w, q in with_latex
           if {"$", "\\"} & set(quotes_html({"quote": q, "where": w}))]
    assert not raw, "quotes shown with their LaTeX in report.html:\n" + "\n".join(raw)


@pytest.mark.parametrize("latex, shown", [
    (r"$\rho^{\text{ss}} = e^{-\Phi}$", "ρ<sup>ss</sup> = <i>e</i><sup>−Φ</sup>"),
    (r"($|\lambda| \leq 10^{-2}$)", "(|λ| ≤ 10<sup>−2</sup>)"),
    (r"with $\approx 95\%$ near-zero", "with ≈ 95% near-zero"),
    (r"a large $\|j(x)\|$", "a large ‖<i>j</i>(<i>x</i>)‖"),
    (r"where $\nabla f(x) = 0$", "where ∇<i>f</i>(<i>x</i>) = 0"),
    (r"namely $(\pm 1, 0)$", "namely (±1, 0)"),
    (r"For $\lambda = 0.5$", "For λ = 0.5"),
    (r"$v_t = \frac{\beta^{-1}}{2} \Delta v$",
     "<i>v</i><sub><i>t</i></sub> = β<sup>−1</sup>/2 Δ <i>v</i>"),
    (r"$\eta/(1+t)^b$", "η/(1+<i>t</i>)<sup><i>b</i></sup>"),
    (r"$B(t) \in \mathbb{R}^d$", "<i>B</i>(<i>t</i>) ∈ ℝ<sup><i>d</i></sup>"),
    # a command the text extraction left outside the dollars
    (r"vectors of \boldsymbol{H} and $\boldsymbol{\Sigma}$",
     "vectors of <b><i>H</i></b> and <b>Σ</b>"),
    (r"$u_{\text{viscous HJ}}(x, T)$ & <b>",
     "<i>u</i><sub>viscous HJ</sub>(<i>x</i>, <i>T</i>) &amp; &lt;b&gt;"),
])
def test_inline_latex_reads_as_unicode_with_sub_and_superscripts(latex, shown):
    assert inline_math_html(latex) == shown


def test_what_is_not_understood_is_shown_as_written():
    assert inline_math_html(r"$\weird{x} + y$") == r"\weird{x} + <i>y</i>"
    assert inline_math_html(r"a $x^{2$ b") == r"a $x^{2$ b"       # an unclosed brace
    assert inline_math_html("costs $5 and more") == "costs $5 and more"
    assert inline_math_html(r"$\mathbb{X}$") == r"\mathbb{X}"


def test_a_quote_s_location_and_the_rest_of_its_text_stay_escaped():
    page = quotes_html({"quote": r"a <b> and $\alpha$", "where": "§1 & l. 2"})
    assert "a &lt;b&gt; and α" in page and "§1 &amp; l. 2" in page


def test_no_catalogue_quote_or_location_shows_a_bare_sub_or_superscript():
    # the text extraction left `10^{-4}`, `η_0`, `θ_{GD}^*` and `β^{-1/2}` outside the dollars
    pairs = list(_catalogue_quotes())
    assert sum("^" in q + w for _, w, q in pairs) >= 8
    raw = [f"{n} ({w})" for n, w, q in pairs
           if {"^", "_"} & set(quotes_html({"quote": q, "where": w}))]
    assert not raw, "quotes shown with bare TeX scripts in report.html:\n" + "\n".join(raw)


@pytest.mark.parametrize("text, shown", [
    ("a learning rate of 10^{-3} that", "a learning rate of 10<sup>−3</sup> that"),
    ("over the next 10^5 epochs.", "over the next 10<sup>5</sup> epochs."),
    ("the initial learning rate η_0 , and", "the initial learning rate η<sub>0</sub> , and"),
    ("the coefficient β^{-1} is", "the coefficient β<sup>−1</sup> is"),
    ("initialized with θ_{GD}^* and", "initialized with θ<sub><i>GD</i></sub><sup>*</sup> and"),
    ("the y^k dynamics; small ℓ^2 norm",
     "the <i>y</i><sup><i>k</i></sup> dynamics; small ℓ<sup>2</sup> norm"),
    ("(1+t)^b", "(1+t)<sup><i>b</i></sup>"),
    (r"\boldsymbol{H}^{-1} & A_{\text{ss}}",
     "<b><i>H</i></b><sup>−1</sup> &amp; <i>A</i><sub>ss</sub>"),
])
def test_bare_sub_and_superscripts_outside_the_dollars_are_rendered(text, shown):
    assert inline_math_html(text) == shown


@pytest.mark.parametrize("text", [
    "zhu_2019.txt", "max_norm and lr_a", "x_1.txt, a_b@x.org, runs/x_1/", "x_1^2.txt",
    "https://example.org/?q=a_b", "www.example.org/x_1", "`x_1` and `10^{-4}`",
    "v10^3 or x_1_2 or a_ b or a^{b", r"escaped a\_b",
])
def test_ordinary_text_with_underscores_and_carets_stays_as_written(text):
    # beside a script that is rendered, so that each case tests the reading, not its absence
    assert inline_math_html(f"{text} at η_0") == f"{html.escape(text)} at η<sub>0</sub>"


def test_a_quote_s_location_renders_its_math_too():
    page = quotes_html({"quote": "q", "where": "after dX = −∇f dt + β^{-1/2} dB (4.2); line 3"})
    assert "β<sup>−1/2</sup> dB (4.2); line 3</span>" in page
