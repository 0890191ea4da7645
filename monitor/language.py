"""Language detection for items whose feed does not say (issue 3 §3): py3langid, offline.

py3langid carries its model inside the wheel (``py3langid/data/model.npz.xz``), so nothing is
downloaded at run time. The model is loaded on first use (~0.6 s, ~50 MB resident) and shared;
loading is guarded by a lock, and scoring only reads the model's arrays, so worker threads may call
`detect_language` at the same time.

When it answers (a code) and when it abstains (None):

* The text needs at least `MIN_LETTERS` letters (`str.isalpha`); a Han, Kana or Hangul character
  counts as two, since one carries about what a short word does. Shorter texts (a bare headline of
  three words, a caption) are too ambiguous.
* Only the first `MAX_CHARS` characters are read: enough for a confident answer on every
  article of the test corpus, and it bounds the cost.
* Probabilities are normalised (``norm_probs=True``), then the model's regional and dialect labels
  are added into their macrolanguage: Egyptian (arz) and Moroccan (ary) Arabic count as ar, Wu and
  Cantonese as zh, and so on (`_MACROLANGUAGE`). Without that, standard Arabic news split between
  ar/arz/ary and fell under the bar. The best language must then reach `MIN_CONFIDENCE` (0.7).
  Measured on the corpus: full articles (921 Arabic, 456 English, Urdu, CJK) all reach it and are
  all right; of 456 English *headlines* alone, 86 reach it and all of those are right, while at
  0.5 four wrong ones got through — so the bar prefers None to a wrong tag.
* The answer is the ISO 639-1 code where there is one ("ar", "en", "ur", "fa", "zh", "ja", "ko"),
  else the model's ISO 639-3 code (as BCP 47 would write it). ``zxx`` (no linguistic content)
  gives None.

How it is fast (about half the CPU time of py3langid's own `rank`, with the same answers on every
text of the test corpus; a test compares the two):

* The letter count looks at the first few dozen characters in C (`str.isalpha` over a slice) and
  walks the text in Python only when those do not settle it (a short or letterless text).
* py3langid finds the byte n-grams of a text with a DFA that it walks byte by byte in Python. That
  DFA forgets: its state after any 6 bytes is the same whatever state it was in before them (it is
  an Aho-Corasick automaton of n-grams of at most 6 bytes; a test checks it on the shipped model).
  So the state at every byte is the one reached from the start over the (up to) 6 bytes ending
  there, and `_Model` computes all of them at once in numpy: 6 vectorised table look-ups instead
  of a Python step per byte. The features found are counted and scored with the model's own
  arrays by the library's arithmetic (naive Bayes log-probabilities, normalised with the square
  root of the length); only the order in which float32 sums are added differs.
* The probabilities of a macrolanguage's labels are added up in numpy, not in a Python loop over
  the ranked labels.

The DFA's transition table is kept in 17 bits an entry (`_Transitions`), 21 MB instead of the
file's 39 MB of uint32: unpacking the 17th bit makes detection cost about 60 µs more CPU per text
of 1,000 characters (about 270 against 210 µs, 1,500 corpus texts, best of three passes), and it
gives the same state numbers, so the same answers. The feature table is kept sparse
(`_SparseRows`: 14 MB instead of 28), for about 30 µs more per such text.
"""

from __future__ import annotations

import functools
import lzma
import math
import shutil
import tempfile
import threading
import unicodedata
import zipfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from operator import itemgetter
from pathlib import Path
from typing import Any, Final

import numpy as np

from monitor.core.text import is_cjk

__all__ = [
    "MAX_CHARS",
    "MIN_CONFIDENCE",
    "MIN_LETTERS",
    "detect_language",
    "item_language",
    "primary_language",
]

MIN_LETTERS: Final = 20
MIN_CONFIDENCE: Final = 0.7
MAX_CHARS: Final = 1000
DFA_MEMORY: Final = 6  # bytes after which the n-gram DFA's state no longer depends on the past

# Labels of the py3langid model that belong to a macrolanguage with an ISO 639-1 code.
_MACROLANGUAGE: Final = {
    "arz": "ar",  # Egyptian Arabic
    "ary": "ar",  # Moroccan Arabic
    "wuu": "zh",  # Wu Chinese
    "yue": "zh",  # Cantonese
    "uzs": "uz",  # Southern Uzbek
    "gug": "gn",  # Paraguayan Guaraní
    "sdh": "ku",  # Southern Kurdish
}
_NO_LANGUAGE: Final = "zxx"
_UNSIGNED: Final = {2: np.uint16, 4: np.uint32, 8: np.uint64}
_CHUNK: Final = 1 << 20  # transitions read from the model file at a time

_lock = threading.Lock()
_model: _Model | None = None


class _Transitions:
    """The DFA's transition table (the next state for each row start + byte), 17 bits an entry:
    the low 16 bits in a uint16 array and the 17th in a bit array. The shipped model has 104,583
    states, one too many bits for uint16; kept as the file has it (uint32) it was 39 MB, this
    way 21 MB, and a look-up gives the very same state numbers."""

    __slots__ = ("high", "low")

    def __init__(self, low: Any, high: Any) -> None:
        self.low = low  # uint16: each next state's low 16 bits
        self.high = high  # uint8: their 17th bits, packed eight to a byte, first entry lowest

    def __len__(self) -> int:
        return len(self.low)

    def at(self, index: Any) -> Any:
        """The next states of the entries `index` (an array of intp), as intp."""
        bits = (self.high[index >> 3] >> (index & 7)) & 1
        return self.low[index].astype(np.intp) | (bits.astype(np.intp) << 16)

    def table(self) -> Any:
        """Every entry, as the model file has them (for tests)."""
        return self.at(np.arange(len(self.low), dtype=np.intp))


class _SparseRows:
    """The model's feature × label table of log-probabilities (`ptc`, float16) as each column's
    least value (`floor`), which 81 % of its entries hold (a feature not seen in a language's
    training text), and the other entries row by row: their excess over the floor (float32) and
    their columns (uint8). 14 MB where the dense table took 28 MB.

    Built from `passes`, which gives a new pass over the table's rows a block at a time each time
    it is called (three passes: the floor, each row's count, the entries): the dense table is never
    held whole. Loading it whole to build this held 28 + 14 MB at once, the daemon's peak of
    resident memory at its start."""

    __slots__ = ("columns", "excess", "floor", "starts")

    _BLOCK: Final = 8192  # rows at a time while building

    def __init__(self, passes: Callable[[], Iterable[Any]]) -> None:
        floor: Any = None
        rows = 0
        for block in passes():
            least = block.min(axis=0)
            floor = least if floor is None else np.minimum(floor, least)
            rows += len(block)
        if floor is None:
            raise ValueError("empty feature table")
        if len(floor) > 256:
            raise ValueError(
                f"unexpected feature table: {len(floor)} labels (columns kept in a byte)"
            )
        self.floor = floor.astype(np.float32)
        counts = np.zeros(rows + 1, dtype=np.int64)
        start = 0
        for block in passes():
            counts[start + 1 : start + 1 + len(block)] = (block != floor).sum(axis=1)
            start += len(block)
        self.starts = np.cumsum(counts)
        # Filled in place: growing lists of blocks and joining them left the heap fragmented.
        self.excess = np.empty(self.starts[-1], dtype=np.float32)
        self.columns = np.empty(self.starts[-1], dtype=np.uint8)
        start = 0
        for block in passes():
            other = block != floor
            at = np.nonzero(other)[1]  # row by row, each row's columns in order
            into = slice(self.starts[start], self.starts[start + len(block)])
            self.excess[into] = block[other].astype(np.float32) - self.floor[at]
            self.columns[into] = at
            start += len(block)

    @classmethod
    def of_table(cls, table: Any) -> _SparseRows:
        """Built from a table in memory."""
        return cls(lambda: (table[i : i + cls._BLOCK] for i in range(0, len(table), cls._BLOCK)))

    def weighted_sum(self, rows: Any, weights: Any) -> Any:
        """`weights @ table[rows]` (float32): the floor once for every weight, then each stored
        entry's excess, weighted by its row's weight, added up per column."""
        starts = self.starts[rows]
        lengths = self.starts[rows + 1] - starts
        ends = np.cumsum(lengths)
        # The stored entries of every row asked, one after the other.
        at = np.arange(ends[-1]) + np.repeat(starts - (ends - lengths), lengths)
        weighted = self.excess[at] * np.repeat(weights, lengths)
        sums = np.bincount(self.columns[at], weights=weighted, minlength=len(self.floor))
        return (sums + float(weights.sum()) * self.floor).astype(np.float32)


class _Model:
    """py3langid's model, scoring a text as its `LanguageIdentifier` does with normalised
    probabilities, with the byte-by-byte DFA walk done in numpy. Built from the arrays of the
    model file, without the identifier's per-state Python lists (about 8 MB)."""

    def __init__(self, model: Sequence[Any]) -> None:
        ptc, pc, classes, transitions, rows, output = model  # as `_model_arrays` reads them
        self.ptc: _SparseRows = ptc  # one row per feature, one column per label
        self.pc = pc
        self.transitions: _Transitions = transitions
        self.rowbase = np.frombuffer(rows, dtype=_UNSIGNED[rows.itemsize]).astype(np.intp) << 8
        self.output = np.asarray(output, dtype=np.int32)  # each state's feature, or -1
        self.labels: list[str] = list(classes)  # one per column; a few repeat
        self.codes = list(dict.fromkeys(_MACROLANGUAGE.get(label, label) for label in self.labels))
        index = {code: i for i, code in enumerate(self.codes)}
        self.code_of_column = np.array(
            [index[_MACROLANGUAGE.get(label, label)] for label in self.labels], dtype=np.intp
        )

    def states(self, data: bytes) -> Any:
        """The DFA's state after each byte of `data`, as a byte-by-byte walk from state 0 has it."""
        codes = np.frombuffer(data, dtype=np.uint8).astype(np.intp)
        states = np.zeros(len(codes), dtype=np.intp)
        # Pass k feeds byte i-k to position i's state, oldest first, so that position i ends after
        # the walk from state 0 over bytes max(0, i-5) … i.
        for back in range(DFA_MEMORY - 1, -1, -1):
            if back >= len(codes):
                continue
            ahead = states[back:]
            ahead[:] = self.transitions.at(self.rowbase[ahead] + codes[: len(codes) - back])
        return states

    def probabilities(self, text: str) -> Any:
        """The probability of each column of the model (a repeated label's columns share it)."""
        # As py3langid encodes a text: an all-capitals text lower-cased, NFC, UTF-8.
        if text.isupper():
            text = text.lower()
        data = unicodedata.normalize("NFC", text).encode("utf-8", errors="surrogatepass")
        features = self.output[self.states(data)]
        found, counts = np.unique(features[features >= 0], return_counts=True)
        if len(found):
            scores = self.ptc.weighted_sum(found, np.log1p(counts.astype(np.float32)))
            scores += self.pc
        else:
            scores = np.zeros(len(self.labels), dtype=np.float32)
        scores *= 1.0 / math.sqrt(len(data) or 1)
        np.exp(scores - scores.max(), out=scores)
        scores /= scores.sum()
        return scores

    def totals(self, text: str) -> Any:
        """The probability of each of `self.codes`: its labels' probabilities added up."""
        weights = self.probabilities(text).astype(np.float64)
        return np.bincount(self.code_of_column, weights=weights, minlength=len(self.codes))

    def rank(self, text: str) -> list[tuple[str, float]]:
        """Every label with its probability, the most likely first (as py3langid's `rank`)."""
        merged: dict[str, float] = {}
        for label, probability in zip(self.labels, self.probabilities(text).tolist(), strict=True):
            merged[label] = merged.get(label, 0.0) + probability
        return sorted(merged.items(), key=itemgetter(1), reverse=True)


def _get_model() -> _Model:
    global _model
    if _model is None:
        with _lock:
            if _model is None:
                from py3langid.langid import MODEL_DIR, MODEL_FILE

                _model = _Model(_model_arrays(MODEL_DIR / MODEL_FILE))
    return _model


def _model_arrays(path: Path) -> tuple[Any, ...]:
    """The arrays of py3langid's model file, as `py3langid.modelio.load_model` reads them but for
    two: its feature table read a block of rows at a time into `_SparseRows`, and its automaton's
    transition table read a chunk at a time into `_Transitions`, its row starts kept as the file
    has them (load_model copies each into a stdlib array, and the second copy of the 37 MB
    transition table was the daemon's peak of resident memory)."""
    with tempfile.TemporaryFile(suffix=".npz") as unpacked:
        with lzma.open(path) as packed:
            shutil.copyfileobj(packed, unpacked, length=1 << 20)
        unpacked.seek(0)
        with zipfile.ZipFile(unpacked) as archive:
            with archive.open("nextmove.npy") as member:
                transitions = _read_transitions(member)
            features = _SparseRows(functools.partial(_row_blocks, archive, "ptc.npy"))
        unpacked.seek(0)
        with np.load(unpacked, allow_pickle=False) as data:
            return (
                features,
                data["pc"],
                data["classes"].tolist(),
                transitions,
                data["nextmove_row"],
                data["out_feat"],
            )


def _row_blocks(archive: zipfile.ZipFile, name: str) -> Iterator[Any]:
    """The rows of the two-dimensional .npy member `name`, `_SparseRows._BLOCK` at a time."""
    with archive.open(name) as member:
        shape, fortran_order, dtype = _npy_header(member)
        if len(shape) != 2 or fortran_order:
            raise ValueError(f"unexpected feature table: {shape}")
        rows, width = shape
        for start in range(0, rows, _SparseRows._BLOCK):
            count = min(_SparseRows._BLOCK, rows - start)
            block = np.frombuffer(member.read(count * width * dtype.itemsize), dtype=dtype)
            if len(block) != count * width:
                raise ValueError("truncated feature table")
            yield block.reshape(count, width)


def _npy_header(member: Any) -> tuple[tuple[int, ...], bool, Any]:
    """The shape, order and dtype of the .npy file `member` is at the start of."""
    version = np.lib.format.read_magic(member)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(member)
    return np.lib.format.read_array_header_2_0(member)


def _read_transitions(member: Any) -> _Transitions:
    """The transition table of an .npy file (one dimension of unsigned integers under 2**17),
    read a chunk at a time so that the whole table is never held at its file's width."""
    shape, _fortran, dtype = _npy_header(member)
    if len(shape) != 1 or dtype.kind != "u":
        raise ValueError(f"unexpected transition table: {shape} {dtype}")
    (count,) = shape
    low = np.empty(count, dtype=np.uint16)
    high = np.zeros((count + 7) // 8, dtype=np.uint8)
    for start in range(0, count, _CHUNK):  # _CHUNK is a multiple of 8: whole bytes of `high`
        size = min(_CHUNK, count - start)
        chunk = np.frombuffer(member.read(size * dtype.itemsize), dtype=dtype)
        if len(chunk) != size:
            raise ValueError("truncated transition table")
        if chunk.max(initial=0) >= 1 << 17:
            raise ValueError("a transition table of more than 2**17 states")
        low[start : start + size] = chunk  # the low 16 bits (numpy casts unsafely here)
        high[start // 8 : (start + size + 7) // 8] = np.packbits(chunk >> 16, bitorder="little")
    return _Transitions(low, high)


def detect_language(text: str) -> str | None:
    """The language of `text` as an ISO 639-1 code (e.g. "ar"), or None when not confident."""
    sample = text[:MAX_CHARS]
    if _letter_weight(sample) < MIN_LETTERS:
        return None
    model = _get_model()
    totals = model.totals(sample)
    best = int(totals.argmax())
    if model.codes[best] == _NO_LANGUAGE or totals[best] < MIN_CONFIDENCE:
        return None
    return model.codes[best]


def _letter_weight(text: str) -> int:
    """Letters in `text`, a Han/Kana/Hangul character counting two; stops counting at the bar."""
    head = sum(map(str.isalpha, text[: 4 * MIN_LETTERS]))  # in C; CJK would only add weight
    if head >= MIN_LETTERS:
        return head
    weight = 0
    for char in text:
        if char.isalpha():
            weight += 2 if is_cjk(char) else 1
            if weight >= MIN_LETTERS:
                break
    return weight


def primary_language(tag: str | None) -> str | None:
    """The primary subtag of a BCP 47 tag, lower-cased: "ar-SA" → "ar", "zh_Hant_TW" → "zh";
    None for None, "" or a tag whose first part is not 2–8 ASCII letters."""
    if tag is None:
        return None
    primary = tag.strip().replace("_", "-").split("-", 1)[0].lower()
    if not 2 <= len(primary) <= 8 or not (primary.isascii() and primary.isalpha()):
        return None
    return primary


def item_language(
    tag: str | None, fallbacks: Sequence[str | None], title: str, body: str
) -> str | None:
    """The language of an item as the service records it and watchlists filter on: the first of
    its own tag and `fallbacks` (its feed's, in order) that is set, as a primary subtag, else the
    language detected in its title and body. `monitor run`, `once` and `match` all call this."""
    for fallback in fallbacks:
        tag = tag or fallback
    language = primary_language(tag)
    if language is None:
        language = detect_language(f"{title}\n{body}")
    return language
