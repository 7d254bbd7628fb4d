"""Text for the recurrent networks of Chaudhari's thesis §3.3: characters or words as int64
token indices, cut into next-token windows.

Every example is a window of ``T`` tokens and the same window shifted by one token:
``x = tokens[t : t + T]``, ``y = tokens[t + 1 : t + T + 1]``, both int64 shaped (N, T). A
model maps x to logits (N, V, T) over the V tokens of ``meta["vocabulary"]``, so that
``F.cross_entropy(logits, y)`` is the mean loss per token (its exponential the perplexity the
thesis reports) and :func:`sgdlab.accuracy.argmax_hits` counts correct next tokens. The windows
of a split do not overlap, follow the text's order and never cross into another split; nothing
is random (``seed`` is recorded, and seeds the generic ``n_train`` / ``n_test`` subsets).

- ``text_chars``: characters of a UTF-8 text file, as Karpathy et al. (2015) and the thesis'
  char-LSTM on War and Peace (§3.3.5): the text cut into 80 % / 10 % / 10 % contiguous
  training, validation and test parts, windows of 50 characters (the thesis' unroll).
- ``ptb``: words of Mikolov's Penn Treebank files (§3.3.4: ``ptb.train.txt``,
  ``ptb.valid.txt``, ``ptb.test.txt``), read as Zaremba et al. (2014)'s reader does; windows
  of 35 words (their unroll).
- ``text_words``: words of any text (by default the corpus below), PTB-style; not PTB.
- ``text_lines``: §3.3.1's char-lstm data, "256 lines of length 32 each and 96-bit one-hot
  encoded characters" (autograd's ``examples/lstm.py``).

Without a file the datasets read the English prose Python ships with itself, the pydoc topics
of the ``pydoc_data`` standard-library module (:func:`pydoc_corpus`: about 465,000
characters, 103 distinct in Python 3.11): text that is on every machine, so the recurrent
experiments run offline and in tests. It differs slightly between Python versions;
``meta["source"]`` names the version.
"""
from __future__ import annotations

import collections
import os
import platform
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import DataError, UserError, did_you_mean, file_problem
from ._common import check_int, require_data_dir
from .base import Dataset
from .registry import register_dataset

#: the datasets that read one text file (``path`` / ``data_dir``) or the bundled corpus
TEXT_DATASETS = ("text_chars", "text_words", "text_lines")

#: the values of the ``split`` option: which held-out part a Dataset's test tensors hold
SPLITS = ("test", "validation")

#: file names War and Peace is found under in ``data_dir``: Project Gutenberg's book 2600
#: (``pg2600.txt``, older ``2600-0.txt`` / ``2600.txt``) and Karpathy's char-rnn copy
TEXT_NAMES = ("pg2600.txt", "2600-0.txt", "2600.txt", "warpeace_input.txt",
              "war_and_peace.txt", "input.txt")

_PTB_FILES = {"train": "ptb.train.txt", "validation": "ptb.valid.txt", "test": "ptb.test.txt"}
# Mikolov's simple-examples.tgz unpacks to simple-examples/data/ptb.*.txt
_PTB_SUBDIRS = ("simple-examples/data", "ptb", "PTB", "data")
# the same three files copied to penn/{train,valid,test}.txt by pytorch/examples'
# word_language_model and salesforce/awd-lstm-lm's getdata.sh
_PENN_FILES = {"train": "train.txt", "validation": "valid.txt", "test": "test.txt"}
_PENN_SUBDIRS = ("penn", "data/penn")
_PTB_ARCHIVE = "simple-examples.tgz"
_PTB_URL = "http://www.fit.vutbr.cz/~imikolov/rnnlm/simple-examples.tgz (simple-examples/data)"
EOS, UNK = "<eos>", "<unk>"

#: ``text_lines``' 96 symbols: printable ASCII chr(32)..chr(126) as 0..94, newline as 95
LINE_SYMBOLS = tuple(chr(c) for c in range(32, 127)) + ("\n",)

_GUTENBERG_START = re.compile(r"^\*\*\* ?START OF (?:THE|THIS) PROJECT GUTENBERG E-?BOOK.*$",
                              re.M | re.I)
_GUTENBERG_END = re.compile(r"^\*\*\* ?END OF (?:THE|THIS) PROJECT GUTENBERG E-?BOOK.*$",
                            re.M | re.I)
# a word of text_words: letters (with inner apostrophes) or a number
_WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)*|\d+(?:[.,]\d+)*")


def pydoc_corpus() -> str:
    """The pydoc topics of this Python, in the order of their names: the English reference
    text ``help("assert")`` etc. print (``pydoc_data.topics.topics``)."""
    import pydoc_data.topics

    topics = pydoc_data.topics.topics
    return "".join(topics[k] for k in sorted(topics))


def _pydoc_source() -> str:
    return f"pydoc_data.topics of Python {platform.python_version()} (bundled with Python)"


def read_text(path: str | Path) -> str:
    """The text of a UTF-8 file (a byte-order mark dropped; ``\\r\\n`` and ``\\r`` line ends
    read as ``\\n``, as Python's text mode reads them). A :class:`DataError` naming the file
    when it is missing, unreadable or not UTF-8."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"text file not found: {path}") from None
    except OSError as e:  # a folder, no permission, an I/O error
        raise DataError(f"cannot read text file {path}: {file_problem(e)}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(f"{path} is not UTF-8 text: {e.reason} at byte {e.start} "
                        f"({raw[e.start:e.start + 1]!r}); save it as UTF-8") from None
    return text.replace("\r\n", "\n").replace("\r", "\n")


def strip_gutenberg(text: str) -> tuple[str, bool]:
    """The book between Project Gutenberg's ``*** START OF THE PROJECT GUTENBERG EBOOK ...
    ***`` and ``*** END OF ...`` lines (blank lines around it dropped), and whether both
    were found; the text unchanged otherwise."""
    start = _GUTENBERG_START.search(text)
    end = _GUTENBERG_END.search(text, start.end()) if start else None
    if start is None or end is None:
        return text, False
    return text[start.end():end.start()].strip("\n") + "\n", True


def _check_split(split: Any) -> str:
    if split not in SPLITS:
        raise UserError(f"option 'split' must be one of {', '.join(SPLITS)} (the held-out part "
                        f"the dataset's test tensors hold), got {split!r}"
                        f"{did_you_mean(split, SPLITS)}")
    return split


def text_file(name: str, path: Any, data_dir: str | Path | None) -> Path | None:
    """The file dataset ``name`` reads: ``path`` (relative to ``data_dir`` when one is given),
    else in ``data_dir`` one of :data:`TEXT_NAMES` or its only ``.txt`` file; None for neither
    (the bundled corpus)."""
    if path is not None:
        if not isinstance(path, (str, os.PathLike)) or not str(path):
            raise UserError(f"option 'path' must be the path of a text file, got {path!r}")
        p = Path(path).expanduser()
        if not p.is_absolute() and data_dir is not None:
            p = require_data_dir(data_dir, name) / p
        return p
    if data_dir is None:
        return None
    root = require_data_dir(data_dir, name)
    for n in TEXT_NAMES:
        if (root / n).is_file():
            return root / n
    found = sorted(p.name for p in root.glob("*.txt") if p.is_file())
    if len(found) == 1:
        return root / found[0]
    if found:
        raise DataError(f"{name}: {root} holds several .txt files ({', '.join(found)}) and none "
                        f"of {', '.join(TEXT_NAMES)}: choose one with the option path")
    raise DataError(f"{name}: no text file in {root} (looked for {', '.join(TEXT_NAMES)} and "
                    f"any single *.txt file); put one there or give the option path (War and "
                    f"Peace: https://www.gutenberg.org/ebooks/2600, Plain Text UTF-8)")


def _corpus(name: str, path: Any, data_dir, gutenberg: bool,
            max_chars: int | None = None) -> tuple[str, str, dict[str, Any]]:
    """(text, where, meta) of the file a text dataset reads, or of the bundled corpus; its
    first ``max_chars`` characters when given."""
    max_chars = check_int("max_chars", max_chars, minimum=1, allow_none=True)
    text, where, info = _whole_corpus(name, path, data_dir, gutenberg)
    return (text if max_chars is None else text[:max_chars]), where, info


def _whole_corpus(name: str, path: Any, data_dir, gutenberg: bool
                  ) -> tuple[str, str, dict[str, Any]]:
    f = text_file(name, path, data_dir)
    if f is None:
        return pydoc_corpus(), "the bundled corpus", {"source": _pydoc_source()}
    text = read_text(f)
    info: dict[str, Any] = {"source": f"text file {f}"}
    if gutenberg:
        text, info["gutenberg_stripped"] = strip_gutenberg(text)
    if not text.strip():
        raise DataError(f"{name}: {f} holds no text" + (" (it is empty)" if not text else ""))
    return text, str(f), info


def token_windows(ids: np.ndarray, seq_len: int, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The non-overlapping next-token windows of the token sequence ``ids``: x (N, T) =
    ``ids[iT : iT + T]``, y = ``ids[iT + 1 : iT + T + 1]``, N = (len − 1) // T (the tokens after
    the last whole window are dropped). A :class:`DataError` naming ``what`` when ``ids`` holds
    no window."""
    n = (len(ids) - 1) // seq_len
    if n < 1:
        raise DataError(f"{what} holds {len(ids)} tokens, too few for one window of seq_len "
                        f"{seq_len} (it needs seq_len + 1 = {seq_len + 1}): use a smaller "
                        f"seq_len or more text")
    ids = np.asarray(ids, dtype=np.int64)
    x = torch.from_numpy(ids[: n * seq_len].reshape(n, seq_len).copy())
    y = torch.from_numpy(ids[1: n * seq_len + 1].reshape(n, seq_len).copy())
    return x, y


def _split_bounds(n: int) -> tuple[int, int]:
    """The ends of the training and validation parts of ``n`` tokens, ⌊0.8 n⌋ and ⌊0.9 n⌋: the
    thesis' 80 % / 10 % / 10 % (§3.3.5, after Karpathy et al. 2015)."""
    return n * 8 // 10, n * 9 // 10


def _finish(name: str, parts: dict[str, np.ndarray], whats: dict[str, str], *,
            seq_len: int, split: str, vocabulary: list[str], seed: int,
            **meta: Any) -> Dataset:
    """The Dataset of the training part's windows and those of part ``split``; ``whats``
    names each part for the error a part too short for one window raises."""
    x_tr, y_tr = token_windows(parts["train"], seq_len, whats["train"])
    x_te, y_te = token_windows(parts[split], seq_len, whats[split])
    info = {"name": name, "task": "classification", "input_shape": (seq_len,),
            "num_outputs": len(vocabulary), "seed": int(seed), "n_train": len(x_tr),
            "n_test": len(x_te), "seq_len": seq_len, "split": split, "vocabulary": vocabulary,
            "n_tokens": {k: int(len(v)) for k, v in parts.items()}}
    info.update(meta)
    return Dataset(x_tr, y_tr, x_te, y_te, info)


def _parts(name: str, ids: np.ndarray, where: str, unit: str
           ) -> tuple[dict[str, np.ndarray], dict[str, str], list[int]]:
    """The contiguous training, validation and test parts of ``ids``, the words naming them,
    and the two boundaries."""
    b1, b2 = _split_bounds(len(ids))
    parts = {"train": ids[:b1], "validation": ids[b1:b2], "test": ids[b2:]}
    spans = {"train": (0, b1), "validation": (b1, b2), "test": (b2, len(ids))}
    whats = {k: f"{name}: the {'training' if k == 'train' else k} part of {where} ({unit} "
                f"{a}..{b - 1} of {len(ids)})" for k, (a, b) in spans.items()}
    return parts, whats, [b1, b2]


@register_dataset("text_chars")
def load_text_chars(*, seed: int = 0, data_dir=None, path: str | None = None, seq_len: int = 50,
                    split: str = "test", max_chars: int | None = None,
                    gutenberg: bool = True) -> Dataset:
    """Character-level language modelling (thesis §3.3.5, after Karpathy et al. 2015).

    The text: the UTF-8 file ``path`` (relative to ``data_dir`` when given), else the file in
    ``data_dir`` (War and Peace as Project Gutenberg serves it, ``pg2600.txt``, or any single
    ``.txt`` file there), else the bundled pydoc corpus (:func:`pydoc_corpus`). A Gutenberg
    licence header and footer are cut off (``gutenberg=False`` keeps them); ``max_chars`` keeps
    the first characters only (small runs). The vocabulary is the sorted distinct characters
    of that text (``meta["vocabulary"]``, ``num_outputs`` its size). The characters are cut
    into contiguous parts: training ``[0, ⌊0.8 n⌋)``, validation ``[⌊0.8 n⌋, ⌊0.9 n⌋)``, test
    ``[⌊0.9 n⌋, n)`` (``meta["boundaries"]``); each into windows of ``seq_len`` characters
    (50, the thesis' unroll). The Dataset's test tensors hold the test part, or the
    validation part with ``split="validation"``.
    """
    seq_len = check_int("seq_len", seq_len, minimum=1)
    split = _check_split(split)
    text, where, info = _corpus("text_chars", path, data_dir, bool(gutenberg), max_chars)
    codes = np.frombuffer(text.encode("utf-32-le"), dtype="<u4")
    chars, ids = np.unique(codes, return_inverse=True)
    ids = ids.reshape(-1)
    parts, whats, bounds = _parts("text_chars", ids, where, "characters")
    return _finish("text_chars", parts, whats, seq_len=seq_len, split=split,
                   vocabulary=[chr(c) for c in chars], seed=seed, boundaries=bounds,
                   max_chars=max_chars, tokens="characters", **info)


# --- words ----------------------------------------------------------------------------------

def ptb_files(data_dir: str | Path | None) -> dict[str, Path]:
    """The three PTB files (by split), all from one folder: Mikolov's ``simple-examples/data``
    and the other usual sub-folders of ``data_dir`` first, then ``data_dir`` itself, then the
    copies ``penn/{train,valid,test}.txt`` (``data_dir/penn``, ``data_dir/data/penn``, or
    ``data_dir`` when it is named ``penn``); a :class:`DataError` naming what is missing where
    (or the unextracted ``simple-examples.tgz`` in ``data_dir``, with the command)."""
    if data_dir is None:
        raise DataError(f"dataset 'ptb' reads files: pass data_dir= (config key data.data_dir) "
                        f"pointing to the folder that holds {', '.join(_PTB_FILES.values())} "
                        f"({_PTB_URL}); text_words is a word-level set that needs no files")
    root = require_data_dir(data_dir, "ptb")
    # train.txt and co. only in a folder named penn: elsewhere they may be any corpus
    penn = [root / s for s in _PENN_SUBDIRS] + ([root] if root.name.lower() == "penn" else [])
    candidates = ([(root / s, _PTB_FILES) for s in _PTB_SUBDIRS] + [(root, _PTB_FILES)]
                  + [(d, _PENN_FILES) for d in penn])
    for d, names in candidates:
        paths = {k: d / n for k, n in names.items()}
        held = [k for k, p in paths.items() if p.is_file()]
        if len(held) == len(paths):
            return paths
        if held:
            missing = [str(p) for k, p in paths.items() if k not in held]
            raise DataError(f"ptb: {d} holds only some of the three files: missing "
                            f"{', '.join(missing)}; they come in {_PTB_URL}")
    archive = root / _PTB_ARCHIVE
    if archive.is_file():   # sgdlab reads the three text files, not the 34 MB archive
        raise DataError(f"ptb: {archive} is not extracted: extract it (tar -xzf {archive} -C "
                        f"{root}); the files are then read from {root / _PTB_SUBDIRS[0]}")
    raise DataError(f"ptb: missing files {', '.join(_PTB_FILES.values())} in {root} (also "
                    f"looked in {', '.join(str(root / s) for s in _PTB_SUBDIRS)}; and for "
                    f"{', '.join(_PENN_FILES.values())} in "
                    f"{', '.join(str(d) for d in penn)}); download and extract {_PTB_URL}")


def ptb_words(text: str) -> list[str]:
    """The tokens of a file in Mikolov's PTB format: each line's words (split on white space)
    and then ``<eos>``, every line, a last one without its newline included (Zaremba et al.'s
    reader: the newlines replaced by ``<eos>``)."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the newline that ends the last line starts no new one
    words: list[str] = []
    for line in lines:
        words.extend(line.split())
        words.append(EOS)
    return words


def _by_count(counts: collections.Counter) -> list[str]:
    # Zaremba et al.'s reader: most frequent first, ties in alphabetical order
    return [w for w, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]


def _unknown_words(path: Path, text: str, index: dict[str, int]) -> str:
    """Where the first word of file ``path`` outside ``index`` is, and how many there are."""
    total, first = 0, None
    for i, line in enumerate(text.split("\n"), 1):
        for w in line.split():
            if w not in index:
                total += 1
                first = first or (i, w)
    return f"{total} word(s) not in the training vocabulary, the first {first[1]!r} on line " \
           f"{first[0]} of {path}"


@register_dataset("ptb")
def load_ptb(*, seed: int = 0, data_dir=None, seq_len: int = 35, split: str = "test",
             unknown: str = "error") -> Dataset:
    """Word-level Penn Treebank (thesis §3.3.4) from Mikolov's ``ptb.train.txt``,
    ``ptb.valid.txt`` and ``ptb.test.txt`` in ``data_dir`` (or its ``simple-examples/data``
    or ``ptb`` folder; or as ``penn/train.txt`` etc.: :func:`ptb_files`), as Zaremba et al.
    (2014)'s reader reads them: one sentence per line, ``<unk>`` already in the text, each
    line's end an ``<eos>`` token. The vocabulary is the
    training file's words, most frequent first, ties alphabetical (10,000 on the real files;
    ``meta["vocabulary"]``); each file's token stream is cut into windows of ``seq_len`` words
    (35, Zaremba et al.'s unroll). The Dataset's test tensors hold ``ptb.test.txt``, or
    ``ptb.valid.txt`` with ``split="validation"``. A word of the validation or test file that
    the training file lacks (none in the real files) is an error naming it
    (``unknown="error"``), or is read as ``<unk>`` (``unknown="unk"``).
    """
    seq_len = check_int("seq_len", seq_len, minimum=1)
    split = _check_split(split)
    if unknown not in ("error", "unk"):
        raise UserError(f"option 'unknown' must be 'error' or 'unk', got {unknown!r}")
    paths = ptb_files(data_dir)
    texts = {k: read_text(p) for k, p in paths.items()}
    tokens = {k: ptb_words(t) for k, t in texts.items()}
    if not any(w != EOS for w in tokens["train"]):
        raise DataError(f"ptb: {paths['train']} holds no words"
                        + (" (it is empty)" if not texts["train"] else ""))
    vocabulary = _by_count(collections.Counter(tokens["train"]))
    index = {w: i for i, w in enumerate(vocabulary)}
    parts = {}
    for k, words in tokens.items():
        if any(w not in index for w in words):
            if unknown == "error" or UNK not in index:
                fix = ("; unknown='unk' reads them as <unk>" if UNK in index else
                       "; the training file has no <unk> to read them as")
                raise DataError(f"ptb: {_unknown_words(paths[k], texts[k], index)}{fix}")
            words = [w if w in index else UNK for w in words]
        parts[k] = np.fromiter((index[w] for w in words), dtype=np.int64, count=len(words))
    whats = {k: f"ptb: {paths[k]}" for k in parts}
    return _finish("ptb", parts, whats, seq_len=seq_len, split=split,
                   vocabulary=vocabulary, seed=seed, unknown=unknown, tokens="words",
                   source=f"PTB files in {paths['train'].parent}")


def text_words(text: str) -> list[str]:
    """``text_words``' tokens: per line, its words lowercased (letters with inner apostrophes;
    a number becomes ``N``, as in PTB), then ``<eos>``; lines without a word are skipped."""
    words: list[str] = []
    for line in text.split("\n"):
        found = ["N" if w[0].isdigit() else w for w in _WORD.findall(line.lower())]
        if found:
            words.extend(found)
            words.append(EOS)
    return words


@register_dataset("text_words")
def load_text_words(*, seed: int = 0, data_dir=None, path: str | None = None,
                    seq_len: int = 35, split: str = "test", vocab_size: int = 10000,
                    max_chars: int | None = None, gutenberg: bool = True) -> Dataset:
    """Word-level language modelling on any text, PTB-style (not the Penn Treebank: ``ptb``
    reads that). The text as :func:`load_text_chars` finds it (by default the bundled pydoc
    corpus), ``max_chars`` its first characters; tokens by :func:`text_words` (lowercase
    words, numbers as ``N``, ``<eos>`` at each line's end). The tokens are cut 80/10/10 into
    contiguous training, validation and test parts (``meta["boundaries"]``); the vocabulary
    is the ``vocab_size − 1`` most frequent words of the training part (ties alphabetical)
    and ``<unk>`` last, which every other word becomes. Windows of ``seq_len`` words (35);
    ``split`` as :func:`load_text_chars`.
    """
    seq_len = check_int("seq_len", seq_len, minimum=1)
    vocab_size = check_int("vocab_size", vocab_size, minimum=2)
    split = _check_split(split)
    text, where, info = _corpus("text_words", path, data_dir, bool(gutenberg), max_chars)
    words = text_words(text)
    if not words:
        raise DataError(f"text_words: {where} holds no words")
    b1 = _split_bounds(len(words))[0]
    counts = collections.Counter(w for w in words[:b1] if w != UNK)
    vocabulary = _by_count(counts)[: vocab_size - 1] + [UNK]
    index = {w: i for i, w in enumerate(vocabulary)}
    unk = index[UNK]
    ids = np.fromiter((index.get(w, unk) for w in words), dtype=np.int64, count=len(words))
    parts, whats, bounds = _parts("text_words", ids, where, "words")
    return _finish("text_words", parts, whats, seq_len=seq_len, split=split,
                   vocabulary=vocabulary, seed=seed, boundaries=bounds,
                   vocab_size=vocab_size, max_chars=max_chars, tokens="words", **info)


# --- §3.3.1's lines -------------------------------------------------------------------------

@register_dataset("text_lines")
def load_text_lines(*, seed: int = 0, data_dir=None, path: str | None = None,
                    n_lines: int = 256, line_length: int = 32, test_lines: int = 64,
                    other_chars: str = "skip", gutenberg: bool = True) -> Dataset:
    """Thesis §3.3.1's char-lstm data: "a small piece of text consisting of 256 lines of length
    32 each and 96-bit one-hot encoded characters", read as autograd's ``examples/rnn.py``
    ``build_dataset`` reads its text (the thesis computed the Hessian with autograd): the
    file's lines with their newline, those of 2 characters or fewer (blank lines) dropped,
    each padded with spaces and cut to ``line_length`` characters. The first ``n_lines`` lines
    are the training set, the next ``test_lines`` the test set (``meta["lines"]``: their line
    numbers in the text). The text: ``path`` / the file in ``data_dir`` as
    :func:`load_text_chars`, else the bundled pydoc corpus.

    The 96 symbols (:data:`LINE_SYMBOLS`) are printable ASCII, chr(32)..chr(126) as 0..94,
    and the newline as 95 (autograd's one-hot is ``ord(c)`` over 128 codes; a newline ends
    most lines, and the thesis' 96 leaves one code beside the 95 printable ones). A line whose
    kept characters include another one (a tab, ``é``, typographic quotes) is skipped
    (``other_chars="skip"``, counted in ``meta["skipped_lines"]``) or is a
    :class:`DataError` naming it (``"error"``). The model one-hot encodes the indices. Each
    line gives x = its first ``line_length − 1`` symbols and y = its last ``line_length − 1``,
    input_shape ``(line_length − 1,)``: autograd's model also predicts a line's first
    character, from its learnt initial state alone, which the shifted-window convention of
    these datasets has no input for.
    """
    n_lines = check_int("n_lines", n_lines, minimum=1)
    line_length = check_int("line_length", line_length, minimum=2)
    test_lines = check_int("test_lines", test_lines, minimum=1)
    if other_chars not in ("skip", "error"):
        raise UserError(f"option 'other_chars' must be 'skip' or 'error', got {other_chars!r}")
    text, where, info = _corpus("text_lines", path, data_dir, bool(gutenberg))
    code = {c: i for i, c in enumerate(LINE_SYMBOLS)}
    need = n_lines + test_lines
    pieces = text.split("\n")
    rows, numbers, skipped = [], [], 0
    for i, p in enumerate(pieces, 1):
        line = p + "\n" if i < len(pieces) else p   # the last piece has no newline
        if len(line) <= 2:                           # autograd: "Remove blank lines"
            continue
        line = (line + " " * line_length)[:line_length]
        bad = next((c for c in line if c not in code), None)
        if bad is not None:
            if other_chars == "error":
                raise DataError(f"text_lines: line {i} of {where} holds {bad!r}, not one of "
                                f"the 96 symbols (printable ASCII and the newline); "
                                f"other_chars='skip' leaves such lines out")
            skipped += 1
            continue
        rows.append([code[c] for c in line])
        numbers.append(i)
        if len(rows) == need:
            break
    if len(rows) < need:
        raise DataError(f"text_lines: {where} holds {len(rows)} lines of more than 2 characters"
                        f"{f' ({skipped} more skipped for other characters)' if skipped else ''}"
                        f"; n_lines + test_lines = {need} are needed")
    ids = torch.tensor(rows, dtype=torch.int64)
    tr, te = ids[:n_lines], ids[n_lines:]
    meta = {"name": "text_lines", "task": "classification", "input_shape": (line_length - 1,),
            "num_outputs": len(LINE_SYMBOLS), "seed": int(seed), "n_train": int(n_lines),
            "n_test": int(test_lines), "line_length": int(line_length),
            "vocabulary": list(LINE_SYMBOLS), "tokens": "characters", "lines": numbers,
            "skipped_lines": skipped, "other_chars": other_chars, **info}
    return Dataset(tr[:, :-1].clone(), tr[:, 1:].clone(), te[:, :-1].clone(),
                   te[:, 1:].clone(), meta)
