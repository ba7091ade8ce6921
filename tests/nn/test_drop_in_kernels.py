"""Issue 11, items 8-11: the kernels are drop-in for torch's nn.RNN / LSTM / GRU.

Every check runs against torch's own module with the same weights: constructor
order and defaults, device/dtype, unbatched input, empty batches (also through a
`classes pool=last` model), T = 0, and a PackedSequence with a wrong state.
"""

import itertools
import warnings

import pytest
import torch
from torch import nn

import rnnspec
from rnnspec.nn import CustomGRU, CustomLSTM, CustomRNN, PeepholeLSTM
from rnnspec.nn.model import RecurrentModel

N_IN, HID = 3, 4
# name: (ours, torch's, extra constructor args after num_layers, impls)
CELLS = {
    "rnn_tanh": (CustomRNN, nn.RNN, ("tanh",), ("custom", "auto", "torch")),
    "rnn_relu": (CustomRNN, nn.RNN, ("relu",), ("custom", "auto", "torch")),
    "lstm": (CustomLSTM, nn.LSTM, (), ("custom", "auto", "torch")),
    "gru": (CustomGRU, nn.GRU, (), ("custom", "auto", "torch")),
    "peephole": (PeepholeLSTM, nn.LSTM, (), ("custom", "auto")),
}
CELL_IMPLS = [(c, i) for c, spec in CELLS.items() for i in spec[3]]


def pair(cell, impl="custom", layers=2, **kwargs):
    """Ours and torch's module, same arguments, same weights (peepholes zero)."""
    ours_cls, torch_cls, extra, _ = CELLS[cell]
    ours = ours_cls(N_IN, HID, layers, *extra, impl=impl, **kwargs)
    theirs = torch_cls(N_IN, HID, layers, *extra, **kwargs)
    if cell == "peephole":
        ours.load_state_dict(theirs.state_dict())  # peepholes load as zero
    else:
        theirs.load_state_dict(ours.state_dict())
    return ours, theirs


def states(cell, shape, dtype=torch.float32):
    h = torch.randn(shape, dtype=dtype)
    return (h, torch.randn_like(h)) if CELLS[cell][1] is nn.LSTM else h


def as_tuple(state):
    return state if isinstance(state, tuple) else (state,)


def outputs_and_grads(module, x, state=None, *lengths):
    """Output, final states, and the gradients of a fixed loss (x, state, weights)."""
    module.zero_grad(set_to_none=True)
    x = x.clone().requires_grad_()
    if state is not None:
        state = tuple(s.clone().requires_grad_() for s in as_tuple(state))
        state = state if len(state) == 2 else state[0]
    out, final = module(x, state, *lengths)
    final = as_tuple(final)
    gen = torch.Generator().manual_seed(0)
    loss = sum((t * torch.randn(t.shape, generator=gen)).sum() for t in (out,) + final)
    loss.backward()
    grads = [x.grad]
    if state is not None:
        grads += [s.grad for s in as_tuple(state)]
    for name, p in sorted(module.named_parameters()):
        if "_ch_" not in name:  # peepholes: torch has none
            grads.append(p.grad)
    return [out, *final], grads


def assert_same(a, b):
    for got, expected in zip(a[0] + a[1], b[0] + b[1], strict=True):
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------- item 8: constructor


@pytest.mark.parametrize("cell", list(CELLS))
def test_defaults_are_torchs_time_major_layout(cell):
    """`CustomLSTM(10, 20, 2)` on (T, B, I) computes what `nn.LSTM(10, 20, 2)` does."""
    torch.manual_seed(0)
    ours, theirs = pair(cell)
    assert ours.batch_first is False and theirs.batch_first is False
    x = torch.randn(5, 2, N_IN)  # (T, B, I)
    assert_same(outputs_and_grads(ours, x), outputs_and_grads(theirs, x))
    h = states(cell, (2, 2, HID))
    assert_same(outputs_and_grads(ours, x, h), outputs_and_grads(theirs, x, h))


@pytest.mark.parametrize("cell", list(CELLS))
def test_positional_arguments_in_torchs_order(cell):
    ours_cls, torch_cls, extra, _ = CELLS[cell]
    # num_layers, [nonlinearity], bias, batch_first, dropout, bidirectional
    args = (N_IN, HID, 2, *extra, False, True, 0.25, True)
    torch.manual_seed(1)
    ours = ours_cls(*args)
    torch.manual_seed(1)
    theirs = torch_cls(*args)
    for name in ("mode", "num_layers", "bias", "batch_first", "dropout"):
        assert getattr(ours, name) == getattr(theirs, name), name
    assert ours.bidirectional and ours.impl == "custom"
    a, b = ours.state_dict(), theirs.state_dict()
    assert [k for k in a if "_ch_" not in k] == list(b)
    for name in b:  # same seed, same draws: torch's init
        assert torch.equal(a[name], b[name]), name
    if cell == "rnn_relu":
        assert ours.nonlinearity == "relu"
        assert repr(CustomRNN(2, 3, 1, "relu")).startswith("CustomRNN(2, 3, ")


@pytest.mark.parametrize("cell", list(CELLS))
def test_device_and_dtype_keywords(cell):
    torch.manual_seed(2)
    ours, theirs = pair(cell, dtype=torch.float64, device="cpu")
    for name, p in ours.named_parameters():
        assert p.dtype == torch.float64 and p.device.type == "cpu", name
    x = torch.randn(4, 2, N_IN, dtype=torch.float64)
    out, theirs_out = ours(x)[0], theirs(x)[0]
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, theirs_out, atol=1e-12, rtol=1e-12)


def test_lstm_positional_device_dtype_and_proj_size():
    for cls in (CustomLSTM, PeepholeLSTM):
        m = cls(N_IN, HID, 1, True, False, 0.0, False, 0, "cpu", torch.float64)
        assert {p.dtype for p in m.parameters()} == {torch.float64}
        m = cls(N_IN, HID, 1, True, False, 0.0, False, 2)  # proj_size (issue 13)
        assert m.weight_hr_l0.shape == (2, HID)
    with pytest.raises(TypeError):  # as torch: impl is no positional argument
        CustomGRU(N_IN, HID, 1, True, False, 0.0, False, None, None, "auto")


# ------------------------------------------------------------------ item 9: unbatched


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize(("cell", "impl"), CELL_IMPLS)
def test_unbatched_input_and_state(cell, impl, batch_first):
    torch.manual_seed(3)
    ours, theirs = pair(cell, impl, bidirectional=True, batch_first=batch_first)
    x = torch.randn(5, N_IN)  # (T, I)
    h = states(cell, (4, HID))  # (L*D, H)
    for state in (None, h):
        got = outputs_and_grads(ours, x, state)
        assert_same(got, outputs_and_grads(theirs, x, state))
        assert got[0][0].shape == (5, 2 * HID)
        assert all(s.shape == (4, HID) for s in got[0][1:])
    # lengths of a single sequence: its prefix, zero after
    out, final = ours(x, h, torch.tensor(3))
    prefix, prefix_final = theirs(x[:3], h)
    torch.testing.assert_close(out[:3], prefix, atol=1e-5, rtol=1e-5)
    assert torch.all(out[3:] == 0)
    for s, t in zip(as_tuple(final), as_tuple(prefix_final)):
        torch.testing.assert_close(s, t, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("cell", ["rnn_tanh", "lstm", "peephole"])
def test_state_dims_must_follow_input_dims(cell):
    ours, theirs = pair(cell)
    cases = [  # (input, state): torch raises RuntimeError for both
        (torch.randn(5, N_IN), states(cell, (2, 1, HID))),
        (torch.randn(5, 1, N_IN), states(cell, (2, HID))),
    ]
    for x, h in cases:
        with pytest.raises(RuntimeError):
            theirs(x, h)
        with pytest.raises(RuntimeError, match=r"Expected \d-D hidden.*got \d-D"):
            ours(x, h)
    x = torch.randn(5, 1, 1, N_IN)
    with pytest.raises(ValueError):
        theirs(x)
    with pytest.raises(ValueError, match="Expected 2-D .* or 3-D input, got 4-D"):
        ours(x)


# --------------------------------------------------------------- item 10: empty batch


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize(("cell", "impl"), CELL_IMPLS)
def test_empty_batch_like_torch(cell, impl, batch_first):
    torch.manual_seed(4)
    ours, theirs = pair(cell, impl, bidirectional=True, batch_first=batch_first)
    x = torch.randn(0, 5, N_IN) if batch_first else torch.randn(5, 0, N_IN)
    expected = outputs_and_grads(theirs, x)
    assert expected[0][0].numel() == 0
    for lengths in ((), (torch.zeros(0, dtype=torch.long),)):
        got = outputs_and_grads(ours, x, None, *lengths)
        for a, b in zip(got[0], expected[0], strict=True):
            assert a.shape == b.shape
        assert_same(got, expected)  # gradients too: zero, as torch's
        h = states(cell, (4, 0, HID))
        got = outputs_and_grads(ours, x, h, *lengths)
        assert_same(got, outputs_and_grads(theirs, x, h))


@pytest.mark.parametrize(("cell", "impl"), CELL_IMPLS)
def test_zero_steps_raise_as_torch(cell, impl):
    ours, theirs = pair(cell, impl)
    for x in (torch.randn(0, 2, N_IN), torch.randn(0, N_IN)):
        with pytest.raises(RuntimeError, match="sequence length to be larger than 0"):
            theirs(x)
        with pytest.raises(
            RuntimeError, match="Expected sequence length to be larger than 0, got 0"
        ):
            ours(x)
    with pytest.raises(RuntimeError, match="Expected sequence length"):
        ours(torch.randn(0, 2, N_IN), None, torch.tensor([1, 1]))


MODEL = """model M {{
    input      features {n_in}
    cell       {cell}
    hidden     {hidden}
    directions 2
    packing    true
    impl       {impl}
    {attention}
    head       classes 5 pool={pool}
}}
"""


@pytest.mark.parametrize(
    ("cell", "impl", "pool", "attention"),
    list(itertools.product(["lstm", "gru"], ["torch", "custom"], ["last"], [""]))
    + [("lstm", "custom", "mean", ""), ("gru", "torch", "max", "attention dot")],
)
def test_empty_batch_through_a_classes_model(
    cell, impl, pool, attention, load_generated
):
    text = MODEL.format(
        n_in=N_IN, cell=cell, hidden=HID, impl=impl, pool=pool, attention=attention
    )
    (spec,) = rnnspec.parse(text)
    runtime = rnnspec.instantiate(spec)
    generated = load_generated(rnnspec.generate(spec)).M()
    x = torch.randn(0, 6, N_IN)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.script is deprecated
        scripted = torch.jit.script(runtime)
    for model in (runtime, generated, scripted):
        for lengths in (None, torch.zeros(0, dtype=torch.long)):
            out, state = model(x, lengths)
            assert out.shape == (0, 5)
            assert all(s.shape == (2, 0, HID) for s in as_tuple(state))
    # and a non-empty batch still pools as before: the last valid step's state
    x = torch.randn(2, 6, N_IN)
    out, state = runtime(x, torch.tensor([6, 3]))
    h_n = as_tuple(state)[0]
    top = torch.cat([h_n[0], h_n[1]], 1)
    if pool == "last" and not attention:
        expected = runtime.head(top)
        torch.testing.assert_close(out, expected)


# ----------------------------------------------------- item 11: packed, wrong state


@pytest.mark.parametrize(("cell", "impl"), CELL_IMPLS)
def test_packed_sequence_with_wrong_state_raises(cell, impl):
    torch.manual_seed(5)
    ours, theirs = pair(cell, impl)
    x = torch.randn(5, 3, N_IN)
    which = r"hidden\[0\]" if CELLS[cell][1] is nn.LSTM else "hidden"
    for enforce_sorted, lengths in ((False, [2, 5, 3]), (True, [5, 3, 2])):
        packed = nn.utils.rnn.pack_padded_sequence(
            x, torch.tensor(lengths), enforce_sorted=enforce_sorted
        )
        for shape in [(2, 4, HID), (2, 2, HID), (1, 3, HID), (2, 3, HID + 1)]:
            state = states(cell, shape)
            got = ", ".join(map(str, shape))
            expected = rf"Expected {which} size \(2, 3, {HID}\), got \[{got}\]"
            with pytest.raises(RuntimeError, match=expected):
                ours(packed, state)
        if CELLS[cell][1] is nn.LSTM:  # c0 checked too
            h, c = states(cell, (2, 3, HID))
            with pytest.raises(RuntimeError, match=r"Expected hidden\[1\] size"):
                ours(packed, (h, c[:, :2]))
        # the right state still matches torch
        state = states(cell, (2, 3, HID))
        out, final = ours(packed, state)
        theirs_out, theirs_final = theirs(packed, state)
        torch.testing.assert_close(out.data, theirs_out.data, atol=1e-5, rtol=1e-5)
        for s, t in zip(as_tuple(final), as_tuple(theirs_final)):
            torch.testing.assert_close(s, t, atol=1e-5, rtol=1e-5)


def test_torch_slices_what_we_reject():
    """Why item 11 exists: torch's GRU silently drops a surplus state row here."""
    gru = nn.GRU(N_IN, HID)
    packed = nn.utils.rnn.pack_padded_sequence(
        torch.randn(5, 3, N_IN), torch.tensor([2, 5, 3]), enforce_sorted=False
    )
    gru(packed, torch.zeros(1, 4, HID))  # no error from torch
    with pytest.raises(RuntimeError, match=r"Expected hidden size \(1, 3, 4\)"):
        pair("gru", layers=1)[0](packed, torch.zeros(1, 4, HID))


# ----------------------------------------------- lengths and layouts around the above


@pytest.mark.parametrize("impl", ["custom", "torch"])
def test_lengths_are_checked(impl):
    """A length past T used to read the next sequence's rows; now it raises."""
    ours = pair("lstm", impl, batch_first=True)[0]
    x = torch.randn(3, 5, N_IN)
    for lengths, message in [
        ([6, 1, 1], r"Expected lengths in 1\.\.5, got \[6, 1, 1\]"),
        ([0, 1, 1], r"Expected lengths in 1\.\.5, got \[0, 1, 1\]"),
        ([5, 5], r"Expected lengths of shape \(3,\), got \[2\]"),
    ]:
        with pytest.raises(ValueError, match=message):
            ours(x, None, torch.tensor(lengths))
    packed = nn.utils.rnn.pack_padded_sequence(x, torch.tensor([5, 2, 1]), True)
    with pytest.raises(ValueError, match="Expected lengths=None with a PackedSequence"):
        ours(packed, None, torch.tensor([5, 2, 1]))


def test_recurrent_model_needs_a_batch_first_rnn():
    """RecurrentModel runs batch-first inside; a time-major kernel would mix axes."""
    with pytest.raises(ValueError, match="Expected rnn with batch_first=True"):
        RecurrentModel(None, CustomLSTM(N_IN, HID), None, None)
    RecurrentModel(None, CustomLSTM(N_IN, HID, batch_first=True), None, None)
