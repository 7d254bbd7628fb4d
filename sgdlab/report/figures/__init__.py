"""Figures: matplotlib (Agg) functions that read recorded data only and return the Figure
(the caller's to close: :func:`save_and_close`, :func:`close_figures`)."""
import sys


def cited(ref: str) -> str:
    """The start of a figure's title that cites the paper figure it reproduces: ``ref``
    ("Chaudhari 2018, Fig. 4.1") and ": ", or nothing where ``ref`` is empty (a title then
    began ": ..."). A figure function that cites takes its ``paper`` from the caller, "" by
    default; the catalogue's entries cite theirs with :func:`sgdlab.experiments.spec.cited`."""
    return f"{ref}: " if ref else ""


def label_colours(labels) -> dict[str, str]:
    """{label: colour} by the label's place among all of them (matplotlib's cycle C0..C9):
    a group, method or run keeps its colour in every panel and figure, also in one where it
    has no value (the colour cycle would give the next label its colour). Here, not beside the
    charts, so that modules that do not draw (a sweep worker's) can name colours without
    importing matplotlib."""
    return {g: f"C{i % 10}" for i, g in enumerate(labels)}


def save_and_close(fig, path, **kwargs):
    """``fig`` saved to ``path`` (:func:`sgdlab.atomic.save_figure`, ``kwargs`` to
    ``savefig``) and closed, also when saving fails; ``path`` as a Path. pyplot holds every
    figure it made until it is closed: a long process (a paper's entries one after another, a
    notebook, a Ray worker) that draws and saves without closing keeps them all in memory."""
    from sgdlab.atomic import save_figure

    try:
        return save_figure(fig, path, **kwargs)
    finally:
        close_figures([fig])


def figure_title(fig) -> str:
    """What ``fig`` says it shows, for a caption beside it: its suptitle, else its panels'
    titles (each once, "; " between them), lines joined by "; "; "" where it has none."""
    # Figure.get_suptitle needs matplotlib 3.8 (the floor is 3.7)
    sup = getattr(fig, "_suptitle", None)
    titles = ([sup.get_text()] if sup is not None and sup.get_text().strip() else
              [t for ax in fig.axes for t in (ax.get_title("left"), ax.get_title())])
    lines = [ln.strip() for t in titles for ln in t.splitlines() if ln.strip()]
    return "; ".join(dict.fromkeys(lines))


def open_figures() -> set[int]:
    """The numbers of the figures pyplot holds (none where it is not imported): what a
    caller that closes what a piece of code left open (:func:`close_figures`) reads before."""
    plt = sys.modules.get("matplotlib.pyplot")
    return set(plt.get_fignums()) if plt is not None else set()


def close_figures(figures) -> None:
    """Close each of ``figures`` (Figures or figure numbers, or (name, Figure) pairs as an
    analysis returns them) that pyplot still holds; for a caller that received figures and is
    done with them."""
    # a figure pyplot holds means pyplot is imported: none is imported (a backend chosen) here
    plt = sys.modules.get("matplotlib.pyplot")
    if plt is None:
        return
    for f in figures:
        plt.close(f[1] if isinstance(f, tuple) else f)
