from sgdlab.cli.columns import aligned


def test_cells_are_padded_to_their_column_and_lines_end_without_spaces():
    rows = [("RUN", "STATUS", "X"), ("a1", "finished", ""), ("abc123", "ok", "1.5")]
    assert aligned(rows) == ["RUN     STATUS    X", "a1      finished", "abc123  ok        1.5"]
    assert aligned(rows[:2], indent="  ") == ["  RUN  STATUS    X", "  a1   finished"]


def test_a_header_wider_than_its_cells_sets_its_column_s_width():
    assert aligned([("RUN_ID", "STATUS"), ("a1", "ok")]) == ["RUN_ID  STATUS", "a1      ok"]
