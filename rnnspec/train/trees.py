"""Binary trees for SPINN: bracket parsing, batching, and a ListOps generator.

A binary tree is written with round brackets around every internal node, e.g.
`( ( a b ) c )`; a lone token is a one-leaf tree. SPINN reads a tree as its tokens
(the leaves, left to right) plus a post-order sequence of transitions: SHIFT (0)
for every leaf, REDUCE (1) after both children of a node. Batches are right-padded:
token id `pad_index` past an example's tokens, transition PAD (2) past its
transitions.

ListOps (Nangia & Bowman, 2018) are nested list expressions over the digits 0-9,
e.g. `[MAX 2 9 [MIN 4 7 ] 0 ]`, with the operators MIN, MAX, MED (the median,
rounded down to an integer) and SM (sum modulo 10); the label is the value. For
SPINN a list is written as a left-branching tree over its items: the operator
token, each argument, then the closing `]`:
`( ( ( ( ( [MAX 2 ) 9 ) ( ( ( [MIN 4 ) 7 ) ] ) ) 0 ) ] )`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Dict, Iterable, List, Sequence, Tuple, Union

import torch

SHIFT, REDUCE, PAD = 0, 1, 2

# --------------------------------------------------------------------------- trees


def parse_tree(text: str) -> Tuple[List[str], List[int]]:
    """Parse a bracketed binary tree into (tokens, transitions).

    >>> parse_tree("( ( a b ) c )")
    (['a', 'b', 'c'], [0, 0, 1, 0, 1])

    Every `( ... )` must hold exactly two subtrees; tokens are separated by
    whitespace, and `(` / `)` standing alone are the only brackets.
    """
    parts = text.split()
    if not parts:
        raise ValueError("empty tree")
    tokens: List[str] = []
    transitions: List[int] = []
    children: List[int] = []  # for each open bracket, the subtrees seen so far
    for pos, part in enumerate(parts):
        if part == "(":
            children.append(0)
            continue
        if part == ")":
            if not children:
                raise ValueError(f"unbalanced ')' at item {pos}")
            if children.pop() != 2:
                raise ValueError(f"node closed at item {pos} does not have 2 children")
            transitions.append(REDUCE)
        else:
            tokens.append(part)
            transitions.append(SHIFT)
        if children:
            children[-1] += 1
        elif pos != len(parts) - 1:
            raise ValueError(f"text after the end of the tree at item {pos + 1}")
    if children:
        raise ValueError("unbalanced '(': the tree is not closed")
    return tokens, transitions


def tree_to_string(tokens: Sequence[str], transitions: Sequence[int]) -> str:
    """Inverse of parse_tree: rebuild the bracketed form (PAD entries are skipped)."""
    stack: List[str] = []
    buffer = iter(tokens)
    for code in transitions:
        if code == SHIFT:
            stack.append(next(buffer))
        elif code == REDUCE:
            right, left = stack.pop(), stack.pop()
            stack.append(f"( {left} {right} )")
    if len(stack) != 1:
        raise ValueError(f"transitions leave {len(stack)} entries on the stack")
    return stack[0]


# ---------------------------------------------------------------------- batching


class Vocab:
    """Token ↔ id map with `<pad>` = 0 and `<unk>` = 1."""

    pad_index = 0
    unk_index = 1

    def __init__(self, tokens: Iterable[str]):
        self.itos: List[str] = ["<pad>", "<unk>"]
        self.stoi: Dict[str, int] = {"<pad>": 0, "<unk>": 1}
        for tok in tokens:
            if tok not in self.stoi:
                self.stoi[tok] = len(self.itos)
                self.itos.append(tok)

    @classmethod
    def from_sequences(cls, sequences: Iterable[Sequence[str]]) -> Vocab:
        return cls(tok for seq in sequences for tok in seq)

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, tokens: Sequence[str]) -> List[int]:
        return [self.stoi.get(tok, self.unk_index) for tok in tokens]


def pad_batch(
    sequences: Sequence[Sequence[int]], pad: int, min_width: int = 0
) -> torch.Tensor:
    """Right-pad int sequences into a (B, L) int64 tensor, L = max(len, min_width)."""
    width = max([min_width] + [len(seq) for seq in sequences])
    out = torch.full((len(sequences), width), pad, dtype=torch.long)
    for row, seq in enumerate(sequences):
        out[row, : len(seq)] = torch.as_tensor(list(seq), dtype=torch.long)
    return out


def batch_trees(
    trees: Sequence[Tuple[Sequence[str], Sequence[int]]], vocab: Vocab
) -> Tuple[torch.Tensor, torch.Tensor]:
    """(tokens, transitions) pairs → (B, N) token ids and (B, S) transitions."""
    tokens = pad_batch([vocab.encode(tok) for tok, _ in trees], vocab.pad_index)
    transitions = pad_batch([trans for _, trans in trees], PAD)
    return tokens, transitions


def batch_sequences(
    sequences: Sequence[Sequence[str]], vocab: Vocab
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Token sequences → (B, T) ids right-padded with pad_index, and (B,) lengths."""
    ids = pad_batch([vocab.encode(seq) for seq in sequences], vocab.pad_index)
    lengths = torch.tensor([len(seq) for seq in sequences], dtype=torch.long)
    return ids, lengths


# ----------------------------------------------------------------------- ListOps

OPERATORS = ("MIN", "MAX", "MED", "SM")

# An expression is a digit or (operator, [arguments]).
Expr = Union[int, Tuple[str, List["Expr"]]]


def listops_value(expr: Expr) -> int:
    """The value of an expression: MIN, MAX, MED (median, rounded down), SM."""
    if isinstance(expr, int):
        return expr
    op, args = expr
    values = sorted(listops_value(arg) for arg in args)
    if op == "MIN":
        return values[0]
    if op == "MAX":
        return values[-1]
    if op == "MED":
        mid = len(values) // 2
        if len(values) % 2:
            return values[mid]
        return (values[mid - 1] + values[mid]) // 2
    if op == "SM":
        return sum(values) % 10
    raise ValueError(f"unknown operator {op!r}")


def listops_tokens(expr: Expr) -> List[str]:
    """Flat token sequence: `[MAX 2 9 [MIN 4 7 ] 0 ]` as a list of tokens."""
    if isinstance(expr, int):
        return [str(expr)]
    op, args = expr
    out = ["[" + op]
    for arg in args:
        out += listops_tokens(arg)
    return out + ["]"]


def listops_transitions(expr: Expr) -> List[int]:
    """SPINN transitions of the left-branching tree (see listops_tree)."""
    if isinstance(expr, int):
        return [SHIFT]
    out = [SHIFT]  # the operator token
    for arg in expr[1]:
        out += listops_transitions(arg) + [REDUCE]
    return out + [SHIFT, REDUCE]  # the closing bracket


def listops_tree(expr: Expr) -> str:
    """Bracketed left-branching tree: ((([OP a1) a2) ... ]) for every list."""
    if isinstance(expr, int):
        return str(expr)
    op, args = expr
    tree = "[" + op
    for item in [listops_tree(arg) for arg in args] + ["]"]:
        tree = f"( {tree} {item} )"
    return tree


def listops_depth(expr: Expr) -> int:
    """Nesting depth: a digit is 0, a list of digits 1."""
    if isinstance(expr, int):
        return 0
    return 1 + max(listops_depth(arg) for arg in expr[1])


@dataclass(frozen=True)
class ListOpsExample:
    expr: Expr
    tokens: Tuple[str, ...]  # the flat sequence, also the tree's leaves
    transitions: Tuple[int, ...]
    label: int

    @property
    def text(self) -> str:
        return " ".join(self.tokens)

    @property
    def tree(self) -> str:
        return listops_tree(self.expr)


def random_listops(
    rng: random.Random,
    max_depth: int = 6,
    min_args: int = 2,
    max_args: int = 5,
    nest_prob: float = 0.25,
    _depth: int = 1,
) -> Expr:
    """One random list at nesting level `_depth`: each argument is a nested list
    with probability `nest_prob` while the depth allows it, else a digit."""
    op = rng.choice(OPERATORS)
    args: List[Expr] = []
    for _ in range(rng.randint(min_args, max_args)):
        if _depth < max_depth and rng.random() < nest_prob:
            args.append(
                random_listops(
                    rng, max_depth, min_args, max_args, nest_prob, _depth + 1
                )
            )
        else:
            args.append(rng.randrange(10))
    return (op, args)


def generate_listops(
    count: int,
    seed: int = 0,
    max_depth: int = 6,
    min_args: int = 2,
    max_args: int = 5,
    min_length: int = 1,
    max_length: int = 100,
    nest_prob: float = 0.25,
) -> List[ListOpsExample]:
    """`count` ListOps examples from a seeded RNG.

    max_depth bounds the nesting (a flat list has depth 1), min_args/max_args the
    arguments per operator, min_length/max_length the number of tokens (drawn
    expressions outside the range are redrawn). Labels are the values, 0-9.
    """
    if not 1 <= min_args <= max_args:
        raise ValueError("expected 1 <= min_args <= max_args")
    if max_depth < 1 or max_length < min_args + 2 or min_length > max_length:
        raise ValueError("limits admit no expression")
    rng = random.Random(seed)
    out: List[ListOpsExample] = []
    while len(out) < count:
        expr = random_listops(rng, max_depth, min_args, max_args, nest_prob)
        tokens = listops_tokens(expr)
        if not min_length <= len(tokens) <= max_length:
            continue
        out.append(
            ListOpsExample(
                expr=expr,
                tokens=tuple(tokens),
                transitions=tuple(listops_transitions(expr)),
                label=listops_value(expr),
            )
        )
    return out


def listops_vocab() -> Vocab:
    """All ListOps tokens: digits, `[OP` for each operator, and `]`."""
    return Vocab([str(d) for d in range(10)] + ["[" + op for op in OPERATORS] + ["]"])
