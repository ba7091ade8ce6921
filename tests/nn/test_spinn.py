"""SPINN encoder (rnnspec.nn.spinn) and its tree utilities (rnnspec.train.trees)."""

import math
import random
import statistics

import pytest
import torch
from torch import nn

from rnnspec.nn.spinn import SPINN, SpinnModel, TreeLSTMReduce
from rnnspec.train.trees import (
    PAD,
    REDUCE,
    SHIFT,
    Vocab,
    batch_sequences,
    batch_trees,
    generate_listops,
    listops_depth,
    listops_tree,
    listops_vocab,
    pad_batch,
    parse_tree,
    tree_to_string,
)

VOCAB = 12


def random_tree(rng: random.Random, leaves: int) -> str:
    """A random binary tree over `leaves` random tokens t0..t11."""
    if leaves == 1:
        return f"t{rng.randrange(VOCAB)}"
    left = rng.randint(1, leaves - 1)
    return f"( {random_tree(rng, left)} {random_tree(rng, leaves - left)} )"


def tree_batch(sizes, seed=0):
    """Trees with the given leaf counts, their (tokens, transitions) and a batch."""
    rng = random.Random(seed)
    trees = [parse_tree(random_tree(rng, n)) for n in sizes]
    vocab = Vocab(f"t{i}" for i in range(VOCAB))  # ids 2..13
    tokens, transitions = batch_trees(trees, vocab)
    return trees, vocab, tokens, transitions


def make_model(tracker=0, dtype=torch.float32, seed=0, **kw):
    torch.manual_seed(seed)
    return SpinnModel(VOCAB + 2, 5, 4, tracker_size=tracker, **kw).to(dtype).eval()


def leaf(model, token_id):
    x = model.embedding(torch.tensor([token_id]))
    return model.encoder.projection(x).chunk(2, -1)  # (1, H) each


def compose(model, left, right, tracking=None):
    """TreeLSTM written out from the contract, with the module's weights."""
    red = model.encoder.reduce
    gates = red.left(left[0]) + red.right(right[0])
    if tracking is not None:
        gates = gates + red.track(tracking)
    a, i, f1, f2, o = gates.chunk(5, -1)
    c = a.tanh() * i.sigmoid() + f1.sigmoid() * left[1] + f2.sigmoid() * right[1]
    return o.sigmoid() * c.tanh(), c


def recursive_treelstm(model, text, vocab):
    """Plain recursion over the bracketed tree."""
    items = text.split()

    def node(pos):
        if items[pos] != "(":
            return leaf(model, vocab.stoi[items[pos]]), pos + 1
        left, pos = node(pos + 1)
        right, pos = node(pos)
        assert items[pos] == ")"
        return compose(model, left, right), pos + 1

    return node(0)[0]


def reference_spinn(model, tokens, transitions):
    """One example, Python lists for stack and buffer, the tracker as nn.LSTMCell."""
    hid = model.encoder.hidden_size
    zero = (torch.zeros(1, hid, dtype=model.embedding.weight.dtype),) * 2
    buffer = [leaf(model, t) for t in tokens]
    stack = []
    tracker = model.encoder.tracker
    state = None
    if tracker is not None:
        state = (torch.zeros(1, tracker.hidden_size, dtype=zero[0].dtype),) * 2
    for code in transitions:
        if code == PAD:
            continue
        if tracker is not None:
            b1 = buffer[0] if buffer else zero
            s1 = stack[-1] if stack else zero
            s2 = stack[-2] if len(stack) > 1 else zero
            state = tracker(torch.cat([b1[0], s1[0], s2[0]], 1), state)
        if code == SHIFT:
            stack.append(buffer.pop(0))
        else:
            right, left = stack.pop(), stack.pop()
            tracking = state[0] if tracker is not None else None
            stack.append(model.encoder.reduce(left, right, tracking))
    (root,) = stack
    return root


SIZES = [1, 7, 3, 12, 5, 2, 9]


# ------------------------------------------------------------------ the encoder


def test_no_tracker_matches_recursive_treelstm():
    trees, vocab, tokens, transitions = tree_batch(SIZES)
    model = make_model()
    with torch.no_grad():
        out, (h, c) = model(tokens, transitions)
        assert out.shape == (len(SIZES), 4) and torch.equal(out, h)
        for b, (toks, trans) in enumerate(trees):
            ref_h, ref_c = recursive_treelstm(model, tree_to_string(toks, trans), vocab)
            torch.testing.assert_close(h[b], ref_h[0], atol=1e-5, rtol=0)
            torch.testing.assert_close(c[b], ref_c[0], atol=1e-5, rtol=0)


def test_tracker_matches_reference_shift_reduce():
    trees, vocab, tokens, transitions = tree_batch(SIZES, seed=1)
    model = make_model(tracker=3, dtype=torch.float64)
    with torch.no_grad():
        _, (h, c) = model(tokens, transitions)
        for b, (toks, trans) in enumerate(trees):
            ref_h, ref_c = reference_spinn(model, vocab.encode(toks), trans)
            torch.testing.assert_close(h[b], ref_h[0], atol=1e-10, rtol=0)
            torch.testing.assert_close(c[b], ref_c[0], atol=1e-10, rtol=0)


def test_tracker_changes_the_encoding():
    _, _, tokens, transitions = tree_batch(SIZES)
    model = make_model(tracker=3)
    with torch.no_grad():
        h, _ = model.encode(tokens, transitions)
        nn.init.zeros_(model.encoder.reduce.track.weight)
        h0, _ = model.encode(tokens, transitions)
    assert (h - h0)[1:].abs().max() > 1e-4  # example 0 is a single leaf


@pytest.mark.parametrize("tracker", [0, 3])
def test_each_example_alone_equals_batch(tracker):
    trees, vocab, tokens, transitions = tree_batch(SIZES, seed=2)
    model = make_model(tracker=tracker)
    with torch.no_grad():
        _, (h, c) = model(tokens, transitions)
        for b, tree in enumerate(trees):
            tok1, trans1 = batch_trees([tree], vocab)
            _, (h1, c1) = model(tok1, trans1)
            torch.testing.assert_close(h1[0], h[b], atol=1e-6, rtol=0)
            torch.testing.assert_close(c1[0], c[b], atol=1e-6, rtol=0)


@pytest.mark.parametrize("tracker", [0, 3])
def test_extra_padding_changes_nothing(tracker):
    _, _, tokens, transitions = tree_batch(SIZES, seed=3)
    model = make_model(tracker=tracker)
    n_shifts = (transitions == SHIFT).sum(1, keepdim=True)
    # Token columns past an example's SHIFTs are never read: fill them with
    # ids that are not even in the vocabulary.
    junk = torch.full((len(SIZES), tokens.shape[1] + 4), -7, dtype=torch.long)
    junk[:, : tokens.shape[1]] = tokens
    cols = torch.arange(junk.shape[1])
    junk = torch.where(cols < n_shifts, junk, torch.tensor(10**6))
    more = torch.cat([transitions, torch.full((len(SIZES), 6), PAD)], 1)
    with torch.no_grad():
        _, (h, c) = model(tokens, transitions)
        _, (h2, c2) = model(junk, more)
    assert torch.equal(h, h2) and torch.equal(c, c2)


@pytest.mark.parametrize("tracker", [0, 3])
def test_padding_steps_anywhere_are_no_ops(tracker):
    _, _, tokens, transitions = tree_batch([6, 4], seed=4)
    model = make_model(tracker=tracker)
    spaced = torch.full((2, 3 * transitions.shape[1]), PAD)
    spaced[:, 1::3] = transitions  # 2 x y 2 ... : left and mid padding
    with torch.no_grad():
        _, (h, _) = model(tokens, transitions)
        _, (h2, _) = model(tokens, spaced)
    torch.testing.assert_close(h, h2, atol=1e-6, rtol=0)


def test_gradcheck_float64():
    _, _, tokens, transitions = tree_batch([3, 1, 4], seed=5)
    model = make_model(tracker=2, dtype=torch.float64)
    x = model.embedding(tokens).detach().requires_grad_()  # (B, N, E)
    names = [n for n, _ in model.encoder.named_parameters()]
    params = tuple(p.detach().requires_grad_() for p in model.encoder.parameters())
    assert len(params) == 10  # projection 2, reduce 4, tracker 4

    def run(x, *weights):
        h, c = torch.func.functional_call(
            model.encoder, dict(zip(names, weights, strict=True)), (x, transitions)
        )
        return h, c

    assert torch.autograd.gradcheck(run, (x, *params))


def test_gradients_reach_every_parameter():
    _, _, tokens, transitions = tree_batch(SIZES, seed=6)
    model = make_model(tracker=3, head="classes", head_size=3)
    out, _ = model(tokens, transitions)
    out.sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_gradients_with_frozen_parts():
    """Reduce/tracker gradients do not depend on whether the leaves need grad."""
    _, _, tokens, transitions = tree_batch(SIZES, seed=6)
    model = make_model(tracker=3, dtype=torch.float64)
    model.encode(tokens, transitions)[0].sum().backward()
    full = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    model.embedding.requires_grad_(False)
    model.encoder.projection.requires_grad_(False)
    model.encode(tokens, transitions)[0].sum().backward()
    for name, p in model.named_parameters():
        if p.requires_grad:
            torch.testing.assert_close(p.grad, full[name], atol=1e-12, rtol=0)
    model.encoder.requires_grad_(False)
    h, _ = model.encode(tokens, transitions)
    assert not h.requires_grad


def test_submodules_follow_the_contract():
    model = SpinnModel(20, 6, 5, tracker_size=3, head="classes", head_size=4)
    enc = model.encoder
    assert isinstance(model.embedding, nn.Embedding)
    assert isinstance(enc, SPINN) and isinstance(enc.reduce, TreeLSTMReduce)
    assert enc.projection.weight.shape == (10, 6)
    assert enc.reduce.left.weight.shape == (25, 5)
    assert enc.reduce.left.bias.shape == (25,)
    assert enc.reduce.right.weight.shape == (25, 5) and enc.reduce.right.bias is None
    assert enc.reduce.track.weight.shape == (25, 3) and enc.reduce.track.bias is None
    assert isinstance(enc.tracker, nn.LSTMCell)
    assert enc.tracker.weight_ih.shape == (12, 15)
    assert enc.tracker.weight_hh.shape == (12, 3)
    plain = SpinnModel(20, 6, 5)
    assert plain.encoder.tracker is None and plain.encoder.reduce.track is None
    assert plain.head is None
    assert not any(k.startswith("head") for k in plain.state_dict())
    assert "encoder.reduce.track.weight" not in plain.state_dict()


def test_single_leaf_is_its_projection():
    model = make_model(tracker=3)
    tokens = torch.tensor([[4, 0]])
    with torch.no_grad():
        _, (h, c) = model(tokens, torch.tensor([[SHIFT, PAD]]))
        ref_h, ref_c = leaf(model, 4)
    torch.testing.assert_close(h, ref_h)
    torch.testing.assert_close(c, ref_c)


# ---------------------------------------------------------------------- heads


def test_classes_head_mlp_layout():
    model = SpinnModel(10, 4, 6, head="classes", head_size=3, mlp_layers=2)
    linears = [m for m in model.head if isinstance(m, nn.Linear)]
    assert [tuple(m.weight.shape) for m in linears] == [(6, 6), (6, 6), (3, 6)]
    assert isinstance(model.head[0], nn.Dropout)
    head_keys = [k for k in model.state_dict() if k.startswith("head.")]
    assert head_keys == [f"head.{i}.{w}" for i in (1, 4, 7) for w in ("weight", "bias")]
    model = SpinnModel(10, 4, 6, head="classes", head_size=3, mlp_layers=0)
    assert [tuple(m.weight.shape) for m in model.head if isinstance(m, nn.Linear)] == [
        (3, 6)
    ]


def test_pair_head_shapes_and_features():
    _, _, tok_a, trans_a = tree_batch([3, 5, 1], seed=7)
    _, _, tok_b, trans_b = tree_batch([6, 2, 4], seed=8)
    torch.manual_seed(0)
    model = SpinnModel(
        VOCAB + 2, 5, 4, tracker_size=2, head="classes", head_size=3, pair=True,
        mlp_hidden=7, head_dropout=0.3,
    ).eval()  # fmt: skip
    linears = [m for m in model.head if isinstance(m, nn.Linear)]
    assert [tuple(m.weight.shape) for m in linears] == [(7, 16), (3, 7)]
    with torch.no_grad():
        logits, ((h_a, c_a), (h_b, c_b)) = model(tok_a, trans_a, tok_b, trans_b)
        assert logits.shape == (3, 3)
        assert h_a.shape == c_a.shape == h_b.shape == c_b.shape == (3, 4)
        ref_a = model.encode(tok_a, trans_a)
        ref_b = model.encode(tok_b, trans_b)
        for got, ref in zip((h_a, c_a, h_b, c_b), ref_a + ref_b, strict=True):
            torch.testing.assert_close(got, ref, atol=1e-6, rtol=0)
        p, q = ref_a[0], ref_b[0]
        features = torch.cat([p, q, p - q, p * q], 1)
        hidden = torch.relu(linears[0](features))
        torch.testing.assert_close(logits, linears[1](hidden), atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="4 inputs"):
        model(tok_a, trans_a)


def test_pair_errors_name_side_and_example():
    _, _, tok, trans = tree_batch([3, 5], seed=9)
    model = SpinnModel(VOCAB + 2, 5, 4, head="classes", head_size=2, pair=True)
    bad = trans.clone()
    bad[1, 0] = REDUCE
    with pytest.raises(ValueError, match="input b: example 1"):
        model(tok, trans, tok, bad)


def test_dropout_only_in_training():
    _, _, tokens, transitions = tree_batch(SIZES, seed=10)
    model = make_model(input_dropout=0.5, head="classes", head_size=3, head_dropout=0.5)
    with torch.no_grad():
        assert torch.equal(model(tokens, transitions)[0], model(tokens, transitions)[0])
        model.train()
        torch.manual_seed(1)
        first = model(tokens, transitions)[0]
        assert not torch.equal(first, model(tokens, transitions)[0])


# --------------------------------------------------------------------- errors


def _bad(transitions, **edit):
    out = transitions.clone()
    for key, value in edit.items():
        b, t = map(int, key[1:].split("_"))
        out[b, t] = value
    return out


def test_invalid_transitions_name_the_example():
    _, _, tokens, transitions = tree_batch([2, 3, 4], seed=11)
    model = make_model()
    cases = {
        "example 2: transition code 5": _bad(transitions, e2_3=5),
        "example 1: transition code -1": _bad(transitions, e1_0=-1),
        "example 1: REDUCE at step 1 with 1 entry on": _bad(transitions, e1_1=REDUCE),
        "example 0: 2 entries left": _bad(transitions, e0_2=PAD),
    }
    for message, trans in cases.items():
        with pytest.raises(ValueError, match=message):
            model(tokens, trans)
    # All padding: nothing is ever pushed.
    empty = transitions.clone()
    empty[2] = PAD
    with pytest.raises(ValueError, match="example 2: 0 entries left"):
        model(tokens, empty)
    # More SHIFTs than token columns.
    with pytest.raises(ValueError, match="example 2: 4 SHIFTs but the tokens have"):
        model(tokens[:, :3], transitions)
    bad_ids = tokens.clone()
    bad_ids[1, 2] = VOCAB + 2
    with pytest.raises(ValueError, match=r"example 1: expected token ids in \[0, 14\)"):
        model(bad_ids, transitions)


def test_bad_shapes_and_dtypes():
    _, _, tokens, transitions = tree_batch([2, 3], seed=12)
    model = make_model()
    with pytest.raises(ValueError, match=r"Expected tokens of shape \(B, N\)"):
        model(tokens[0], transitions)
    with pytest.raises(ValueError, match="dtype torch.int64, got .* torch.int32"):
        model(tokens, transitions.int())
    with pytest.raises(ValueError, match="Expected transitions for 2 examples, got 1"):
        model(tokens, transitions[:1])
    with pytest.raises(ValueError, match=r"Expected x of shape \(B, N, 5\)"):
        model.encoder(torch.zeros(2, 3), transitions)
    with pytest.raises(ValueError, match="Expected 2 inputs"):
        model(tokens, transitions, tokens, transitions)


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="hidden_size"):
        SpinnModel(10, 4, 0)
    with pytest.raises(ValueError, match="head_size"):
        SpinnModel(10, 4, 4, head="classes")
    with pytest.raises(ValueError, match="pair"):
        SpinnModel(10, 4, 4, pair=True)
    with pytest.raises(ValueError, match="input_dropout"):
        SpinnModel(10, 4, 4, input_dropout=1.0)
    with pytest.raises(ValueError, match="padding_idx"):
        SpinnModel(10, 4, 4, padding_idx=10)
    with pytest.raises(ValueError, match="head"):
        SpinnModel(10, 4, 4, head="logits")


# ---------------------------------------------------------------- trees module


def test_parse_tree():
    assert parse_tree("( ( a b ) c )") == (["a", "b", "c"], [0, 0, 1, 0, 1])
    assert parse_tree("( a ( b c ) )") == (["a", "b", "c"], [0, 0, 0, 1, 1])
    assert parse_tree("x") == (["x"], [0])
    assert parse_tree("( [MAX ] )") == (["[MAX", "]"], [0, 0, 1])
    for text in ["", "( a b", "a b", "( a )", "( a b c )", "( a b ) )", ") a"]:
        with pytest.raises(ValueError):
            parse_tree(text)


def test_trees_round_trip():
    rng = random.Random(13)
    for _ in range(50):
        text = random_tree(rng, rng.randint(1, 15))
        tokens, transitions = parse_tree(text)
        assert len(transitions) == 2 * len(tokens) - 1
        assert tree_to_string(tokens, transitions) == text


def test_batch_helpers():
    vocab = Vocab(["a", "b"])
    assert len(vocab) == 4 and vocab.encode(["b", "zzz"]) == [3, vocab.unk_index]
    assert pad_batch([[1], [2, 3]], pad=9).tolist() == [[1, 9], [2, 3]]
    tokens, transitions = batch_trees([parse_tree("a"), parse_tree("( a b )")], vocab)
    assert tokens.tolist() == [[2, 0], [2, 3]]
    assert transitions.tolist() == [[SHIFT, PAD, PAD], [SHIFT, SHIFT, REDUCE]]
    assert tokens.dtype == transitions.dtype == torch.long
    ids, lengths = batch_sequences([["a"], ["a", "b", "b"]], vocab)
    assert ids.tolist() == [[2, 0, 0], [2, 3, 3]] and lengths.tolist() == [1, 3]


# -------------------------------------------------------------------- ListOps


def evaluate_listops(text: str) -> int:
    """Independent evaluator over the flat text `[MAX 2 9 [MIN 4 7 ] 0 ]`."""
    frames = [("ROOT", [])]
    for tok in text.split():
        if tok.startswith("["):
            frames.append((tok[1:], []))
        elif tok == "]":
            op, values = frames.pop()
            value = {
                "MIN": min,
                "MAX": max,
                "MED": lambda v: math.floor(statistics.median(v)),
                "SM": lambda v: sum(v) % 10,
            }[op](values)
            frames[-1][1].append(value)
        else:
            frames[-1][1].append(int(tok))
    ((_, [value]),) = frames
    return value


def test_listops_example_from_the_paper():
    expr = ("MAX", [2, 9, ("MIN", [4, 7]), 0])
    assert listops_tree(expr) == (
        "( ( ( ( ( [MAX 2 ) 9 ) ( ( ( [MIN 4 ) 7 ) ] ) ) 0 ) ] )"
    )
    assert evaluate_listops("[MAX 2 9 [MIN 4 7 ] 0 ]") == 9
    assert evaluate_listops("[MED 1 2 4 9 ]") == 3
    assert evaluate_listops("[SM 5 [MED 8 6 ] 9 ]") == 1


def test_listops_labels_limits_and_round_trip():
    examples = generate_listops(
        400, seed=14, max_depth=4, min_args=2, max_args=4, max_length=60
    )
    labels = set()
    for ex in examples:
        assert ex.label == evaluate_listops(ex.text)
        labels.add(ex.label)
        assert parse_tree(ex.tree) == (list(ex.tokens), list(ex.transitions))
        assert len(ex.tokens) <= 60
        assert 1 <= listops_depth(ex.expr) <= 4
        depth, best = 0, 0
        for tok in ex.tokens:
            depth += tok.startswith("[") - (tok == "]")
            best = max(best, depth)
        assert best == listops_depth(ex.expr)
        stack = [ex.expr]
        while stack:
            node = stack.pop()
            if not isinstance(node, int):
                assert 2 <= len(node[1]) <= 4
                stack.extend(node[1])
    assert labels == set(range(10))
    assert any(listops_depth(ex.expr) == 4 for ex in examples)
    again = generate_listops(400, seed=14, max_depth=4, max_args=4, max_length=60)
    assert [ex.text for ex in again] == [ex.text for ex in examples]
    other = generate_listops(400, seed=15, max_depth=4, max_args=4, max_length=60)
    assert [ex.text for ex in other] != [ex.text for ex in examples]
    long = generate_listops(50, seed=1, min_length=30)
    assert all(len(ex.tokens) >= 30 for ex in long)


def test_listops_batches_run_through_spinn():
    examples = generate_listops(16, seed=16, max_depth=3)
    vocab = listops_vocab()
    tokens, transitions = batch_trees(
        [(ex.tokens, ex.transitions) for ex in examples], vocab
    )
    model = SpinnModel(len(vocab), 8, 8, tracker_size=4, head="classes", head_size=10)
    logits, _ = model(tokens, transitions)
    assert logits.shape == (16, 10)
