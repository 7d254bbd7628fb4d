"""The text datasets (thesis §3.3.1, §3.3.4, §3.3.5) on small files written here, and on the
pydoc corpus bundled with Python; what the lab does to data after loading, on token inputs."""
from __future__ import annotations

import pytest
import torch

from sgdlab.data import load_dataset, standardize
from sgdlab.data.files import find_files
from sgdlab.data.text import LINE_SYMBOLS, pydoc_corpus
from sgdlab.errors import DataError, UserError

# 103 characters, more than one line, not a multiple of any window used below
TEXT = ("Well, Prince, so Genoa and Lucca are now just family estates of the Buonapartes.\n"
        "But I warn you, if you don't tell me that this means war, if you still try to defend "
        "the infamies and horrors perpetrated by that Antichrist--I really believe he is "
        "Antichrist--I will have nothing more to do with you.\n")


def decode(ds, rows) -> list[str]:
    vocab = ds.meta["vocabulary"]
    return ["".join(vocab[int(i)] for i in row) for row in rows]


def expected_windows(part: str, t: int) -> tuple[list[str], list[str]]:
    n = (len(part) - 1) // t
    return ([part[i * t:(i + 1) * t] for i in range(n)],
            [part[i * t + 1:(i + 1) * t + 1] for i in range(n)])


@pytest.mark.parametrize("split", ["test", "validation"])
def test_text_chars_windows_are_the_text_shifted_by_one_in_the_80_10_10_parts(tmp_path, split):
    f = tmp_path / "book.txt"
    f.write_text(TEXT * 3, encoding="utf-8")
    text = TEXT * 3
    ds = load_dataset("text_chars", path=str(f), seq_len=7, split=split)
    n = len(text)
    b1, b2 = int(n * 0.8), int(n * 0.9)
    assert ds.meta["boundaries"] == [b1, b2]
    assert ds.meta["vocabulary"] == sorted(set(text)) and ds.num_outputs == len(set(text))
    assert ds.x_train.dtype == ds.y_train.dtype == ds.x_test.dtype == torch.int64
    assert ds.input_shape == (7,) and ds.task == "classification" and ds.name == "text_chars"
    held = text[b2:] if split == "test" else text[b1:b2]
    for (x, y), part in (((ds.x_train, ds.y_train), text[:b1]), ((ds.x_test, ds.y_test), held)):
        want_x, want_y = expected_windows(part, 7)
        assert decode(ds, x) == want_x and decode(ds, y) == want_y
    assert torch.equal(ds.y_train[:, :-1], ds.x_train[:, 1:])
    assert ds.meta["split"] == split and ds.meta["n_train"] == len(ds.x_train)


def test_text_chars_default_is_the_bundled_pydoc_corpus():
    corpus = pydoc_corpus()
    assert len(corpus) > 100_000
    ds = load_dataset("text_chars")
    assert ds.meta["vocabulary"] == sorted(set(corpus)) and "pydoc_data" in ds.meta["source"]
    assert ds.input_shape == (50,)                       # the thesis' unroll
    b1 = len(corpus) * 8 // 10
    assert len(ds.x_train) == (b1 - 1) // 50
    assert decode(ds, ds.x_train[:2]) == [corpus[:50], corpus[50:100]]
    small = load_dataset("text_chars", max_chars=5000, seq_len=20)
    assert small.meta["vocabulary"] == sorted(set(corpus[:5000]))
    assert decode(small, small.y_train[:1]) == [corpus[1:21]]
    assert torch.equal(small.x_test, load_dataset("text_chars", max_chars=5000,
                                                  seq_len=20).x_test)


def test_text_chars_finds_the_book_in_data_dir_and_strips_gutenbergs_licence(tmp_path):
    book = "\ufeffThe Project Gutenberg eBook of War and Peace\r\n\r\n" \
           "*** START OF THE PROJECT GUTENBERG EBOOK WAR AND PEACE ***\r\n\r\n" \
           + TEXT.replace("\n", "\r\n") * 2 + \
           "\r\n*** END OF THE PROJECT GUTENBERG EBOOK WAR AND PEACE ***\r\nLicence text\r\n"
    (tmp_path / "pg2600.txt").write_bytes(book.encode("utf-8"))
    (tmp_path / "notes.txt").write_text("something else " * 10)
    ds = load_dataset("text_chars", data_dir=tmp_path, seq_len=10)
    assert ds.meta["gutenberg_stripped"] and str(tmp_path / "pg2600.txt") in ds.meta["source"]
    assert ds.meta["vocabulary"] == sorted(set(TEXT))       # no \r, no byte-order mark
    assert decode(ds, ds.x_train[:1]) == [TEXT[:10]]
    raw = load_dataset("text_chars", data_dir=tmp_path, seq_len=10, gutenberg=False)
    assert "\ufeff" not in raw.meta["vocabulary"] and "*" in raw.meta["vocabulary"]
    # a relative path is read in data_dir; a single .txt file there is the book
    other = load_dataset("text_chars", data_dir=tmp_path, path="notes.txt", seq_len=3)
    assert other.meta["vocabulary"] == sorted(set("something else"))
    (tmp_path / "pg2600.txt").unlink()
    assert load_dataset("text_chars", data_dir=tmp_path, seq_len=3).meta["vocabulary"] == \
        other.meta["vocabulary"]


def test_text_chars_bad_files_name_the_problem(tmp_path):
    with pytest.raises(DataError, match=f"text file not found: {tmp_path / 'nope.txt'}"):
        load_dataset("text_chars", path=str(tmp_path / "nope.txt"))
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(DataError, match=r"empty.txt holds no text \(it is empty\)"):
        load_dataset("text_chars", path=str(tmp_path / "empty.txt"))
    (tmp_path / "latin1.txt").write_bytes("Pierre Bézukhov".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin1.txt is not UTF-8 text: invalid .* at byte 8"):
        load_dataset("text_chars", path=str(tmp_path / "latin1.txt"))
    (tmp_path / "short.txt").write_text("x" * 1000)
    # the test part holds 100 characters: 99 is the longest window with a next character
    short = str(tmp_path / "short.txt")
    assert load_dataset("text_chars", path=short, seq_len=99).x_test.shape == (1, 99)
    with pytest.raises(DataError, match=r"the test part of .*short.txt \(characters 900..999 of "
                                        r"1000\) holds 100 tokens, too few for one window of "
                                        r"seq_len 100"):
        load_dataset("text_chars", path=short, seq_len=100)
    with pytest.raises(DataError, match=r"the training part .* holds 800 tokens"):
        load_dataset("text_chars", path=short, seq_len=800)
    with pytest.raises(DataError, match=f"cannot read text file {tmp_path}"):
        load_dataset("text_chars", path=str(tmp_path))
    with pytest.raises(UserError, match="option 'split' must be one of test, validation"):
        load_dataset("text_chars", split="valid")
    with pytest.raises(UserError, match="'seq_len' must be an int >= 1"):
        load_dataset("text_chars", seq_len=0)
    (tmp_path / "d").mkdir()
    with pytest.raises(DataError, match=r"no text file in .*d \(looked for pg2600.txt"):
        load_dataset("text_chars", data_dir=tmp_path / "d")
    for n in ("a.txt", "b.txt"):
        (tmp_path / "d" / n).write_text(TEXT)
    with pytest.raises(DataError, match=r"several .txt files \(a.txt, b.txt\)"):
        load_dataset("text_chars", data_dir=tmp_path / "d")


def write_ptb(root, train: str, valid: str, test: str):
    root.mkdir(parents=True, exist_ok=True)
    for name, text in (("train", train), ("valid", valid), ("test", test)):
        (root / f"ptb.{name}.txt").write_text(text)


# Mikolov's format: a space before each line, <unk> in the text, a space before the newline
PTB_TRAIN = " the cat sat \n the dog <unk> the cat \n a cat \n"
PTB_VALID = " the dog sat \n a <unk> \n"
PTB_TEST = " the cat \n the dog sat the cat \n"


def test_ptb_reads_mikolovs_files_with_eos_and_zarembas_vocabulary(tmp_path):
    write_ptb(tmp_path / "simple-examples" / "data", PTB_TRAIN, PTB_VALID, PTB_TEST)
    ds = load_dataset("ptb", data_dir=tmp_path, seq_len=3)
    # counts: <eos>, cat, the 3 each, then <unk>, a, dog, sat once each (ties alphabetical)
    assert ds.meta["vocabulary"] == ["<eos>", "cat", "the", "<unk>", "a", "dog", "sat"]
    assert ds.num_outputs == 7 and ds.input_shape == (3,)
    train = "the cat sat <eos> the dog <unk> the cat <eos> a cat <eos>".split()
    test = "the cat <eos> the dog sat the cat <eos>".split()
    for (x, y), words in (((ds.x_train, ds.y_train), train), ((ds.x_test, ds.y_test), test)):
        n = (len(words) - 1) // 3
        assert [[ds.meta["vocabulary"][i] for i in row] for row in x.tolist()] == \
            [words[3 * i:3 * i + 3] for i in range(n)]
        assert [[ds.meta["vocabulary"][i] for i in row] for row in y.tolist()] == \
            [words[3 * i + 1:3 * i + 4] for i in range(n)]
    assert ds.x_train.dtype == torch.int64 and ds.meta["n_tokens"]["train"] == len(train)
    val = load_dataset("ptb", data_dir=tmp_path, seq_len=2, split="validation")
    assert [[val.meta["vocabulary"][i] for i in r] for r in val.x_test.tolist()] == \
        [["the", "dog"], ["sat", "<eos>"], ["a", "<unk>"]]
    assert find_files("ptb", tmp_path) == f"PTB files in {tmp_path / 'simple-examples' / 'data'}"


def test_ptb_unknown_words_are_refused_or_read_as_unk(tmp_path):
    write_ptb(tmp_path, PTB_TRAIN, " the cat \n a horse sat \n", PTB_TEST)
    with pytest.raises(DataError, match=r"1 word\(s\) not in the training vocabulary, the first "
                                        r"'horse' on line 2 of .*ptb.valid.txt; unknown='unk'"):
        load_dataset("ptb", data_dir=tmp_path, split="validation", seq_len=2)
    ds = load_dataset("ptb", data_dir=tmp_path, split="validation", seq_len=2, unknown="unk")
    assert [[ds.meta["vocabulary"][i] for i in r] for r in ds.x_test.tolist()] == \
        [["the", "cat"], ["<eos>", "a"], ["<unk>", "sat"]]
    write_ptb(tmp_path / "nounk", " a b \n", " c \n", " a \n")
    with pytest.raises(DataError, match="the training file has no <unk> to read them as"):
        load_dataset("ptb", data_dir=tmp_path / "nounk", split="validation", unknown="unk")


def test_ptb_missing_or_bad_files_name_them(tmp_path):
    with pytest.raises(DataError, match=r"missing files ptb.train.txt, ptb.valid.txt, "
                                        r"ptb.test.txt in .* \(also looked in .*simple-examples"
                                        r"/data.*\); download and extract .*simple-examples.tgz"):
        load_dataset("ptb", data_dir=tmp_path)
    with pytest.raises(DataError, match="dataset 'ptb' reads files: pass data_dir="):
        load_dataset("ptb")
    (tmp_path / "ptb").mkdir()
    (tmp_path / "ptb" / "ptb.train.txt").write_text(PTB_TRAIN)
    with pytest.raises(DataError, match=r"holds only some of the three files: missing "
                                        r".*ptb.valid.txt, .*ptb.test.txt"):
        load_dataset("ptb", data_dir=tmp_path)
    write_ptb(tmp_path / "empty", "", PTB_VALID, PTB_TEST)
    with pytest.raises(DataError, match=r"ptb.train.txt holds no words \(it is empty\)"):
        load_dataset("ptb", data_dir=tmp_path / "empty")
    write_ptb(tmp_path / "bin", PTB_TRAIN, PTB_VALID, PTB_TEST)
    (tmp_path / "bin" / "ptb.test.txt").write_bytes(b"\xff\xfe the")
    with pytest.raises(DataError, match=r"ptb.test.txt is not UTF-8 text"):
        load_dataset("ptb", data_dir=tmp_path / "bin")
    write_ptb(tmp_path / "ok", PTB_TRAIN, PTB_VALID, PTB_TEST)
    with pytest.raises(DataError, match=r"ptb: .*ptb.test.txt holds 9 tokens, too few for one "
                                        r"window of seq_len 9"):
        load_dataset("ptb", data_dir=tmp_path / "ok", seq_len=9)


def test_text_words_is_ptb_style_with_a_capped_vocabulary(tmp_path):
    f = tmp_path / "t.txt"
    f.write_text("Hello, World! 42 times\n\nit's the World's end, 3.5 times\n" * 10)
    ds = load_dataset("text_words", path=str(f), seq_len=4, vocab_size=4)
    words = "hello world N times <eos> it's the world's end N times <eos>".split() * 10
    b1 = len(words) * 8 // 10
    assert ds.meta["boundaries"] == [b1, len(words) * 9 // 10]
    # training counts: N 16, times 16, <eos> 16 (ties alphabetical), then <unk> for the rest
    assert ds.meta["vocabulary"] == ["<eos>", "N", "times", "<unk>"]
    kept = [w if w in ds.meta["vocabulary"] else "<unk>" for w in words]
    assert [[ds.meta["vocabulary"][i] for i in r] for r in ds.x_train[:2].tolist()] == \
        [kept[:4], kept[4:8]]
    full = load_dataset("text_words")
    assert full.input_shape == (35,) and full.meta["vocabulary"][-1] == "<unk>"
    assert "pydoc_data" in full.meta["source"]
    assert all(w == w.lower() for w in full.meta["vocabulary"] if w not in ("N", "<eos>",
                                                                            "<unk>"))


def test_text_lines_are_autograds_padded_lines_of_96_symbols(tmp_path):
    f = tmp_path / "code.py"
    lines = ["def f(x):", "", "    return x + 1  # a comment longer than the line", "y", "z = 2"]
    f.write_text("\n".join(lines))      # no newline after the last line
    ds = load_dataset("text_lines", path=str(f), n_lines=2, test_lines=1, line_length=12)
    # lines of 2 characters or fewer (with their newline) are dropped: "" and "y"
    rows = ["def f(x):\n  ", "    return x", "z = 2       "]
    assert ds.meta["lines"] == [1, 3, 5]
    assert decode(ds, ds.x_train) == [r[:-1] for r in rows[:2]]
    assert decode(ds, ds.y_train) == [r[1:] for r in rows[:2]]
    assert decode(ds, ds.x_test) == [rows[2][:-1]] and ds.input_shape == (11,)
    assert ds.num_outputs == 96 and LINE_SYMBOLS[0] == " " and LINE_SYMBOLS[95] == "\n"
    assert LINE_SYMBOLS[94] == "~"
    g = tmp_path / "quotes.txt"
    g.write_text("plain line\n“quoted”\nanother line\n")
    skip = load_dataset("text_lines", path=str(g), n_lines=1, test_lines=1, line_length=8)
    assert skip.meta["lines"] == [1, 3] and skip.meta["skipped_lines"] == 1
    with pytest.raises(DataError, match=r"line 2 of .*quotes.txt holds '“', not one of the 96"):
        load_dataset("text_lines", path=str(g), n_lines=1, test_lines=1, other_chars="error")
    with pytest.raises(DataError, match=r"holds 2 lines of more than 2 characters \(1 more "
                                        r"skipped for other characters\); n_lines \+ test_lines"
                                        r" = 3"):
        load_dataset("text_lines", path=str(g), n_lines=2, test_lines=1)


def test_text_lines_default_is_the_thesis_256_lines_of_32():
    ds = load_dataset("text_lines")
    assert ds.x_train.shape == ds.y_train.shape == (256, 31) and ds.x_test.shape == (64, 31)
    first = pydoc_corpus().split("\n")[0] + "\n"
    assert decode(ds, ds.x_train[:1]) == [(first + " " * 32)[:31]]
    assert int(ds.x_train.max()) < 96 and int(ds.x_train.min()) >= 0


def test_generic_options_on_token_windows(tmp_path):
    full = load_dataset("text_chars", max_chars=20000, seq_len=20)
    a = load_dataset("text_chars", max_chars=20000, seq_len=20, n_train=100, n_test=10, seed=3)
    b = load_dataset("text_chars", max_chars=20000, seq_len=20, n_train=100, n_test=10, seed=3)
    c = load_dataset("text_chars", max_chars=20000, seq_len=20, n_train=100, n_test=10, seed=4)
    assert a.x_train.shape == (100, 20) and a.x_test.shape == (10, 20)
    assert torch.equal(a.x_train, b.x_train) and not torch.equal(a.x_train, c.x_train)
    # the subset's windows are windows of the full set, in text order, with their targets
    pairs = list(zip(full.x_train.tolist(), full.y_train.tolist()))
    at = -1
    for pair in zip(a.x_train.tolist(), a.y_train.tolist()):
        at = pairs.index(pair, at + 1)      # a ValueError if it is not a later window
    with pytest.raises(UserError, match=r"label noise needs one class label per example; "
                                        r"dataset 'text_chars' has a label per position"):
        load_dataset("text_chars", max_chars=20000, label_noise=5)
    with pytest.raises(UserError, match=r"option 'classes' needs one class label per example"):
        load_dataset("text_chars", max_chars=20000, classes=[0, 1])
    with pytest.raises(UserError, match=r"crops and flips images .* inputs shaped \(50,\)$"):
        load_dataset("text_chars", max_chars=20000, augment="crop")
    with pytest.raises(UserError, match=r"standardize .* 'text_chars' has torch.int64 inputs"):
        standardize(full)
    cast = full.to(dtype=torch.float64)
    assert cast.x_train.dtype == cast.y_test.dtype == torch.int64
    assert torch.equal(cast.x_train, full.x_train)


def test_a_run_config_trains_on_text_chars(tmp_path, capsys):
    from sgdlab.cli.main import main
    from sgdlab.config import json_schema

    cfg = tmp_path / "text.yaml"
    cfg.write_text("name: text\n"
                   "data: {name: text_chars, options: {max_chars: 20000, seq_len: 20, "
                   "n_train: 64, n_test: 32}}\n"
                   "model: {name: char-lstm, options: {hidden: 8, layers: 1}}\n"
                   "optimizer: {name: adam, lr: 0.01}\n"
                   "train: {epochs: 2, batch_size: 16, threads: 1, dtype: float64}\n")
    assert main(["train", str(cfg), "--no-progress", "--store", str(tmp_path / "s.sqlite"),
                 "--out", str(tmp_path / "out")]) == 0
    assert "finished after 8 steps" in capsys.readouterr().out
    data = {r["if"]["properties"]["name"]["const"]: r["then"]["properties"]["options"]
            for r in json_schema()["$defs"]["DataSection"]["allOf"]}
    assert {"path", "seq_len", "split", "max_chars"} <= set(data["text_chars"]["properties"])
    assert {"seq_len", "split", "unknown"} <= set(data["ptb"]["properties"])
    assert {"n_lines", "line_length"} <= set(data["text_lines"]["properties"])


def test_ptb_in_the_penn_folder_of_the_pytorch_examples_and_as_the_archive(tmp_path):
    # pytorch/examples and awd-lstm-lm keep the three files as penn/{train,valid,test}.txt
    write_ptb(tmp_path / "ref", PTB_TRAIN, PTB_VALID, PTB_TEST)
    ref = load_dataset("ptb", data_dir=tmp_path / "ref", seq_len=2)
    penn = tmp_path / "data" / "penn"
    penn.mkdir(parents=True)
    for name, text in (("train", PTB_TRAIN), ("valid", PTB_VALID), ("test", PTB_TEST)):
        (penn / f"{name}.txt").write_text(text)
    for root in (tmp_path, penn):
        ds = load_dataset("ptb", data_dir=root, seq_len=2)
        assert ds.meta["vocabulary"] == ref.meta["vocabulary"]
        assert torch.equal(ds.x_train, ref.x_train) and torch.equal(ds.y_test, ref.y_test)
        assert ds.meta["source"] == f"PTB files in {penn}"
    # the same names outside a penn folder are not taken for PTB
    (penn / "test.txt").rename(tmp_path / "other.txt")
    with pytest.raises(DataError, match=rf"{penn} holds only some of the three files: "
                                        rf"missing {penn / 'test.txt'}"):
        load_dataset("ptb", data_dir=tmp_path)
    for name in ("train", "valid"):
        (penn / f"{name}.txt").rename(penn.parent / f"{name}.txt")
    (tmp_path / "other.txt").rename(penn.parent / "test.txt")
    with pytest.raises(DataError, match=r"missing files ptb.train.txt"):
        load_dataset("ptb", data_dir=penn.parent)
    # Mikolov's archive as downloaded: said to be extracted, with the command
    (tmp_path / "simple-examples.tgz").write_bytes(b"\x1f\x8b")
    with pytest.raises(DataError, match=rf"^ptb: {tmp_path / 'simple-examples.tgz'} is not "
                                        rf"extracted: extract it \(tar -xzf .* -C {tmp_path}\); "
                                        rf"the files are then read from "
                                        rf"{tmp_path / 'simple-examples' / 'data'}$"):
        load_dataset("ptb", data_dir=tmp_path)


def test_find_files_looks_up_the_text_file_as_loading_does(tmp_path):
    # a plan said "found (not looked up)" for text_chars in a data_dir without War and Peace,
    # and the run failed later
    with pytest.raises(DataError, match=rf"^text_chars: no text file in {tmp_path} "):
        find_files("text_chars", tmp_path)
    assert find_files("text_words", None) == "the bundled corpus"
    (tmp_path / "pg2600.txt").write_text("War and Peace\n")
    assert find_files("text_chars", tmp_path) == f"text file {tmp_path / 'pg2600.txt'}"
    with pytest.raises(DataError, match=rf"^text_lines: text file not found: "
                                        rf"{tmp_path / 'other.txt'}$"):
        find_files("text_lines", str(tmp_path), "other.txt")


def test_read_text_reads_windows_and_old_mac_line_ends_as_newlines(tmp_path):
    from sgdlab.data.text import read_text

    p = tmp_path / "book.txt"
    # a byte-order mark, then lines ended by CR LF (Windows), CR (classic Mac OS) and LF
    p.write_bytes(b"\xef\xbb\xbfone\r\ntwo\rthree\n")
    assert read_text(p) == "one\ntwo\nthree\n"


def test_text_words_vocabulary_is_the_training_parts_words_only(tmp_path):
    # 8 lines "alpha beta", then "yak", "zebra", "zebra": 30 tokens, the training part the
    # first 30 * 8 // 10 = 24 (the 8 lines); yak lies in the validation part (tokens 24..26)
    # and zebra in both held-out parts: both are read as <unk>
    f = tmp_path / "t.txt"
    f.write_text("alpha beta\n" * 8 + "yak\n" + "zebra\n" * 2)
    ds = load_dataset("text_words", path=str(f), seq_len=2, vocab_size=100,
                      split="validation")
    assert ds.meta["boundaries"] == [24, 27]
    assert ds.meta["vocabulary"] == ["<eos>", "alpha", "beta", "<unk>"]
    # validation part: yak, <eos>, zebra: one window
    assert ds.x_test.tolist() == [[3, 0]] and ds.y_test.tolist() == [[0, 3]]
