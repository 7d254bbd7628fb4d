"""Figures: matplotlib (Agg) functions that read recorded data only and return the Figure."""


def label_colours(labels) -> dict[str, str]:
    """{label: colour} by the label's place among all of them (matplotlib's cycle C0..C9):
    a group, method or run keeps its colour in every panel and figure, also in one where it
    has no value (the colour cycle would give the next label its colour). Here, not beside the
    charts, so that modules that do not draw (a sweep worker's) can name colours without
    importing matplotlib."""
    return {g: f"C{i % 10}" for i, g in enumerate(labels)}
