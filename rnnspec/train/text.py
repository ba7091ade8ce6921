"""Text data: a corpus, its tokens, its vocabulary, and sequences cut from it.

- `load_text(data)`: a text file, or `"stdlib"`, a corpus assembled deterministically
  from the running Python's standard library sources.
- `Vocab`: character or whitespace-word tokens, saved as JSON.
- `TextDataset`: the text cut into sequences of at most `seq_len + 1` tokens at line
  boundaries (so lengths vary), batched by
  `rnnspec.train.batching.BucketBatchSampler` and padded per batch.
"""

from __future__ import annotations

import hashlib
import itertools
import sys
import sysconfig
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from rnnspec.train.errors import TrainError

#: Marks the end of a line in word mode (whitespace tokens lose the newlines).
EOL = "<eol>"
#: Target value of padded steps: `F.cross_entropy(..., ignore_index=IGNORE)`.
IGNORE = -100

#: Standard-library modules of the `stdlib` corpus, in order; absent ones skipped.
STDLIB_FILES = (
    "argparse.py",
    "base64.py",
    "bisect.py",
    "calendar.py",
    "collections/__init__.py",
    "contextlib.py",
    "copy.py",
    "csv.py",
    "dataclasses.py",
    "difflib.py",
    "enum.py",
    "fnmatch.py",
    "fractions.py",
    "functools.py",
    "glob.py",
    "heapq.py",
    "inspect.py",
    "json/decoder.py",
    "json/encoder.py",
    "operator.py",
    "pprint.py",
    "queue.py",
    "random.py",
    "shlex.py",
    "statistics.py",
    "string.py",
    "textwrap.py",
    "threading.py",
    "typing.py",
    "weakref.py",
)


def stdlib_corpus() -> str:
    """Python source from the running interpreter's standard library (~1 MB).

    Deterministic for a given Python version: a fixed list of modules, in order,
    keeping printable ASCII and newlines only.
    """
    root = Path(sysconfig.get_paths()["stdlib"])
    parts = []
    for name in STDLIB_FILES:
        path = root / name
        if path.is_file():
            text = path.read_text(encoding="utf-8", errors="replace")
            parts.append(f"# ---- {name} ----\n" + _printable_ascii(text))
    if not parts:
        raise TrainError(f"found no standard-library sources under {root}")
    return "\n".join(parts)


def _printable_ascii(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\t", "    ")
    return "".join(c for c in text if c == "\n" or " " <= c <= "~")


def load_text(data: str) -> tuple[str, str]:
    """(text, description) of `data`: a UTF-8 file path, or `stdlib`."""
    if data == "stdlib":
        version = ".".join(map(str, sys.version_info[:3]))
        return stdlib_corpus(), f"stdlib (Python {version})"
    path = Path(data)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TrainError(
            f"no such data file: {data} (pass a text file, or `stdlib` for a "
            "corpus of Python standard-library sources)"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TrainError(f"cannot read {data} as UTF-8 text: {exc}") from None
    return text, str(path)


def token_lines(text: str, mode: str) -> list[list[str]]:
    """The text's tokens line by line: characters (newline included) or words."""
    if mode == "char":
        return [list(line) for line in text.splitlines(keepends=True)]
    if mode == "word":
        lines = (line.split() for line in text.splitlines())
        return [words + [EOL] for words in lines if words]
    raise ValueError(f"tokens must be 'char' or 'word', got {mode!r}")


class Vocab:
    """Token strings ↔ ids; `mode` is 'char' or 'word'. Ids follow sorted order."""

    def __init__(self, tokens: Sequence[str], mode: str) -> None:
        if mode not in ("char", "word"):
            raise ValueError(f"tokens must be 'char' or 'word', got {mode!r}")
        self.tokens = list(tokens)
        self.mode = mode
        self.index = {token: i for i, token in enumerate(self.tokens)}

    @classmethod
    def build(cls, lines: Sequence[Sequence[str]], mode: str) -> Vocab:
        return cls(sorted({token for line in lines for token in line}), mode)

    def __len__(self) -> int:
        return len(self.tokens)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Vocab):
            return NotImplemented
        return (self.tokens, self.mode) == (other.tokens, other.mode)

    def encode(self, text: str) -> tuple[list[int], list[str]]:
        """(ids, unknown tokens) of `text`; unknown tokens are left out of the ids."""
        tokens = [t for line in token_lines(text, self.mode) for t in line]
        if self.mode == "word" and tokens and not text.rstrip(" ").endswith("\n"):
            tokens.pop()  # no end-of-line the text did not have
        ids = [self.index[t] for t in tokens if t in self.index]
        return ids, [t for t in tokens if t not in self.index]

    def decode(self, ids: Sequence[int]) -> str:
        tokens = [self.tokens[i] for i in ids]
        if self.mode == "char":
            return "".join(tokens)
        parts: list[str] = []
        for token in tokens:
            if token == EOL:
                parts.append("\n")
            else:
                if parts and parts[-1] != "\n":
                    parts.append(" ")
                parts.append(token)
        return "".join(parts)

    def to_json(self) -> dict[str, Any]:
        return {"mode": self.mode, "tokens": self.tokens}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Vocab:
        return cls(data["tokens"], data["mode"])


class TextDataset:
    """Sequences of 2..`max_len` token ids, cut from whole lines where they fit.

    Lines are packed greedily into sequences of at most `max_len` tokens; a line
    longer than that is cut. Item i is a language-model pair: inputs
    `ids[:-1]`, targets `ids[1:]`.
    """

    def __init__(self, sequences: Sequence[Sequence[int]]) -> None:
        if not sequences:
            raise ValueError("no sequences")
        self.lengths = [len(s) - 1 for s in sequences]  # steps of each input
        self.offsets = list(
            itertools.accumulate((len(s) for s in sequences), initial=0)
        )
        self.ids = torch.tensor([i for s in sequences for i in s], dtype=torch.long)

    @staticmethod
    def cut(lines: Sequence[Sequence[int]], max_len: int) -> list[list[int]]:
        """Pack lines of ids into sequences of 2..max_len ids, in text order."""
        sequences: list[list[int]] = []
        current: list[int] = []
        for line in lines:
            if len(current) + len(line) <= max_len:
                current.extend(line)
                continue
            sequences.append(current)
            line = list(line)
            while len(line) > max_len:
                sequences.append(line[:max_len])
                line = line[max_len:]
            current = line
        sequences.append(current)
        return [s for s in sequences if len(s) >= 2]

    def __len__(self) -> int:
        return len(self.lengths)

    def tokens(self) -> int:
        """Predicted tokens in the whole dataset."""
        return sum(self.lengths)

    def collate(self, indices: Sequence[int]) -> tuple[Tensor, Tensor, Tensor]:
        """(inputs (B, T), targets (B, T) with IGNORE past each end, lengths (B,))."""
        lengths = torch.tensor([self.lengths[i] for i in indices], dtype=torch.long)
        steps = int(lengths.max())
        x = torch.zeros(len(indices), steps, dtype=torch.long)
        y = torch.full((len(indices), steps), IGNORE, dtype=torch.long)
        for row, i in enumerate(indices):
            start, n = self.offsets[i], self.lengths[i]
            x[row, :n] = self.ids[start : start + n]
            y[row, :n] = self.ids[start + 1 : start + n + 1]
        return x, y, lengths


def text_sha256(text: str) -> str:
    """The hash a checkpoint keeps of its text, to resume on the same text only."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
