"""`sgdlab list`: finding the entry that reproduces a figure."""
from __future__ import annotations

from sgdlab.cli.main import main


def test_a_paper_or_a_figure_finds_its_entries(capsys):
    """`sgdlab list zhu` and `sgdlab list 'zhu fig. 4'` were errors ("unknown experiment"):
    a reader looking for a figure had to read the whole catalogue."""
    assert main(["list", "zhu fig. 4"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("zhu-projection-residual ") and "Fig. 4(b)" in out
    assert "run: sgdlab run zhu-projection-residual --scale cpu" in out
    assert main(["list", "ZHU"]) == 0
    names = [line.split()[0] for line in capsys.readouterr().out.splitlines()
             if line and not line.startswith(" ")]
    assert len(names) == 9 and all(n.startswith("zhu-") for n in names)


def test_an_exact_name_shows_that_entry_alone(capsys):
    assert main(["list", "xing-walk"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("xing-walk ") and "xing-walk-" not in out
    assert "run: sgdlab run xing-walk --scale cpu" in out


def test_nothing_found_is_still_an_error(capsys):
    assert main(["list", "fig. 99"]) == 2
    assert "unknown experiment 'fig. 99'" in capsys.readouterr().err


def test_a_misspelt_name_still_names_the_closest(capsys):
    assert main(["list", "zhu-escape2d"]) == 2
    assert "did you mean zhu-escape-2d" in capsys.readouterr().err


def test_the_catalogue_is_listed_by_name(capsys):
    # in the files' order chaudhari-entropy-sgd-rnn came before chaudhari-entropy-sgd
    assert main(["list"]) == 0
    names = [line.split()[0] for line in capsys.readouterr().out.splitlines()
             if line.split() and "-" in line.split()[0] and line[0].isalpha()]
    assert len(names) >= 40 and names == sorted(names)
    assert names.index("chaudhari-entropy-sgd") < names.index("chaudhari-entropy-sgd-rnn")
