"""The from-scratch kernels against torch's modules, the contract's peephole equations,
autograd's numerical gradients, and TorchScript / export."""

import warnings
from typing import Optional

import pytest
import torch
from torch import nn

from rnnspec.nn.gru import CustomGRU, GRUKernelFunction, gru_kernel_plain
from rnnspec.nn.kernel import kernel_project
from rnnspec.nn.lstm import CustomLSTM, LSTMKernelFunction, lstm_kernel_plain
from rnnspec.nn.peephole import (
    PeepholeKernelFunction,
    PeepholeLSTM,
    peephole_kernel_plain,
)
from rnnspec.nn.rnn import CustomRNN, RNNKernelFunction, rnn_kernel_plain

N_IN, HID = 4, 6
CELLS = {
    "rnn_tanh": (CustomRNN, nn.RNN, {"nonlinearity": "tanh"}),
    "rnn_relu": (CustomRNN, nn.RNN, {"nonlinearity": "relu"}),
    "lstm": (CustomLSTM, nn.LSTM, {}),
    "gru": (CustomGRU, nn.GRU, {}),
}


def make_pair(cell, layers, bidirectional, bias=True, batch_first=True, **kw):
    """Our module and torch's, with our weights loaded into torch's."""
    ours_cls, torch_cls, extra = CELLS[cell]
    impl = kw.pop("impl", "custom")
    args = dict(num_layers=layers, bias=bias, batch_first=batch_first)
    args.update(bidirectional=bidirectional, **extra, **kw)
    ours = ours_cls(N_IN, HID, impl=impl, **args)
    theirs = torch_cls(N_IN, HID, **args)
    theirs.load_state_dict(ours.state_dict())
    return ours, theirs


def initial_state(cell, layers, directions, batch):
    h0 = torch.randn(layers * directions, batch, HID)
    return (h0, torch.randn_like(h0)) if cell == "lstm" else h0


def as_tuple(state):
    return state if isinstance(state, tuple) else (state,)


def leaf_copy(state):
    if state is None:
        return None
    if isinstance(state, tuple):
        return tuple(s.clone().requires_grad_() for s in state)
    return state.clone().requires_grad_()


def run(module, x, state, lengths=None, packed_torch=False, weights=None):
    """Forward and backward of a fixed random linear loss; returns what to compare."""
    module.zero_grad(set_to_none=True)
    x = x.clone().requires_grad_()
    state = leaf_copy(state)
    batch_first = module.batch_first
    if packed_torch:
        steps = x.shape[1] if batch_first else x.shape[0]
        packed = nn.utils.rnn.pack_padded_sequence(
            x, lengths, batch_first=batch_first, enforce_sorted=False
        )
        out, final = module(packed, state)
        out, _ = nn.utils.rnn.pad_packed_sequence(
            out, batch_first=batch_first, total_length=steps
        )
    elif lengths is None:
        out, final = module(x, state)
    else:
        out, final = module(x, state, lengths)
    final = as_tuple(final)
    gen = torch.Generator().manual_seed(7)
    loss = (out * torch.randn(out.shape, generator=gen)).sum()
    for s in final:
        loss = loss + (s * torch.randn(s.shape, generator=gen)).sum()
    loss.backward()
    grads = {"x": x.grad}
    for k, s in enumerate(as_tuple(state) if state is not None else ()):
        grads[f"state{k}"] = s.grad
    for name, p in module.named_parameters():
        grads[name] = None if p.grad is None else p.grad.clone()
    return out.detach(), tuple(s.detach() for s in final), grads


def assert_same(a, b, atol=1e-5, grad_atol=1e-4, skip=()):
    out_a, final_a, grads_a = a
    out_b, final_b, grads_b = b
    torch.testing.assert_close(out_a, out_b, atol=atol, rtol=1e-5)
    assert len(final_a) == len(final_b)
    for s, t in zip(final_a, final_b):
        torch.testing.assert_close(s, t, atol=atol, rtol=1e-5)
    names = set(grads_b) - set(skip)
    assert names <= set(grads_a)
    for name in sorted(names):
        assert grads_a[name] is not None, name
        torch.testing.assert_close(
            grads_a[name], grads_b[name], atol=grad_atol, rtol=1e-4, msg=name
        )


# ------------------------------------------------------------------------ vs torch


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("layers", [1, 3])
@pytest.mark.parametrize("cell", list(CELLS))
def test_matches_torch(cell, layers, bidirectional, bias):
    torch.manual_seed(0)
    directions = 2 if bidirectional else 1
    for batch_first in (True, False):
        ours, theirs = make_pair(cell, layers, bidirectional, bias, batch_first)
        x = torch.randn(3, 5, N_IN) if batch_first else torch.randn(5, 3, N_IN)
        for state in (None, initial_state(cell, layers, directions, 3)):
            assert_same(run(ours, x, state), run(theirs, x, state))


@pytest.mark.parametrize("cell", list(CELLS))
def test_same_seed_same_weights_as_torch(cell):
    ours_cls, torch_cls, extra = CELLS[cell]
    torch.manual_seed(3)
    ours = ours_cls(N_IN, HID, 2, bidirectional=True, **extra)
    torch.manual_seed(3)
    theirs = torch_cls(N_IN, HID, 2, bidirectional=True, batch_first=True, **extra)
    a, b = ours.state_dict(), theirs.state_dict()
    assert list(a) == list(b)
    for name in b:
        assert torch.equal(a[name], b[name]), name


def test_peephole_weights_follow_torch_init():
    torch.manual_seed(4)
    peep = PeepholeLSTM(N_IN, HID, 2, bidirectional=True)
    torch.manual_seed(4)
    lstm = nn.LSTM(N_IN, HID, 2, bidirectional=True)
    a, b = peep.state_dict(), lstm.state_dict()
    extra = [f"weight_ch_l{k}{s}" for k in range(2) for s in ("", "_reverse")]
    assert list(a) == list(b) + extra
    for name in b:
        assert torch.equal(a[name], b[name]), name
    bound = HID**-0.5
    for name in extra:
        assert a[name].shape == (3 * HID,)
        assert a[name].abs().max() <= bound and a[name].abs().max() > bound / 2
    # the draws continue torch's random stream
    assert not torch.equal(a["weight_ch_l0"], a["weight_ch_l0_reverse"])


def test_impl_values():
    with pytest.raises(ValueError):
        CustomLSTM(N_IN, HID, impl="fast")
    with pytest.raises(ValueError):
        PeepholeLSTM(N_IN, HID, impl="torch")
    assert "impl='auto'" in repr(CustomGRU(N_IN, HID, impl="auto"))


# ------------------------------------------------------------------------- packed


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("cell", ["rnn_tanh", "lstm", "gru"])
def test_packed_matches_torch_packed(cell, bidirectional, batch_first):
    torch.manual_seed(1)
    directions = 2 if bidirectional else 1
    ours, theirs = make_pair(cell, 2, bidirectional, batch_first=batch_first)
    lengths = torch.tensor([2, 6, 1, 4, 6])  # unsorted, with 1 and T
    x = torch.randn(5, 6, N_IN) if batch_first else torch.randn(6, 5, N_IN)
    for state in (None, initial_state(cell, 2, directions, 5)):
        expected = run(theirs, x, state, lengths, packed_torch=True)
        assert_same(run(ours, x, state, lengths), expected)
        ours.impl = "auto"  # packed on CPU: ours
        assert_same(run(ours, x, state, lengths), expected)
        ours.impl = "custom"
        assert_same(run(ours, x, state, lengths, packed_torch=True), expected)


@pytest.mark.parametrize("cell", ["rnn_relu", "lstm", "gru", "peephole"])
def test_packed_each_sequence_alone(cell):
    """Inside a padded batch == alone; padded rows are exactly zero."""
    torch.manual_seed(2)
    if cell == "peephole":
        model = PeepholeLSTM(N_IN, HID, 2, batch_first=True, bidirectional=True)
    else:
        model = make_pair(cell, 2, True)[0]
    lengths = torch.tensor([3, 1, 6, 4])  # T = 7 > longest: a fully padded step
    x = torch.randn(4, 7, N_IN)
    state = initial_state("lstm" if cell == "peephole" else cell, 2, 2, 4)
    out, final = model(x, state, lengths)
    final = as_tuple(final)
    for b, n in enumerate(lengths.tolist()):
        alone_state = tuple(s[:, b : b + 1] for s in as_tuple(state))
        if len(alone_state) == 1:
            alone_state = alone_state[0]
        alone, alone_final = model(x[b : b + 1, :n], alone_state)
        torch.testing.assert_close(out[b, :n], alone[0], atol=1e-6, rtol=1e-5)
        for s, t in zip(final, as_tuple(alone_final)):
            torch.testing.assert_close(s[:, b], t[:, 0], atol=1e-6, rtol=1e-5)
        assert torch.all(out[b, n:] == 0)
    # padding values do not leak into anything
    x2 = x.clone()
    for b, n in enumerate(lengths.tolist()):
        x2[b, n:] = 1e3
    out2, final2 = model(x2, state, lengths)
    assert torch.equal(out, out2)
    for s, t in zip(final, as_tuple(final2)):
        assert torch.equal(s, t)


@pytest.mark.parametrize("cell", ["rnn_tanh", "lstm", "gru"])
def test_auto_dispatch(cell):
    """auto: torch's kernel without lengths (bit for bit), ours with lengths on CPU."""
    torch.manual_seed(3)
    ours, theirs = make_pair(cell, 2, True, impl="auto")
    x = torch.randn(3, 5, N_IN)
    assert torch.equal(ours(x)[0], theirs(x)[0])
    lengths = torch.tensor([5, 2, 3])
    auto_out = ours(x, None, lengths)[0]
    ours.impl = "custom"
    assert torch.equal(auto_out, ours(x, None, lengths)[0])
    ours.impl = "torch"
    torch.testing.assert_close(auto_out, ours(x, None, lengths)[0])


# ------------------------------------------------------------------------ peephole


def peephole_reference(m, x, h0, c0, lengths):
    """The contract's equations, one sequence and one step at a time (batch_first)."""
    batch, steps, _ = x.shape
    directions = 2 if m.bidirectional else 1
    sig = torch.sigmoid
    outputs = []
    h_n = [[None] * batch for _ in range(m.num_layers * directions)]
    c_n = [[None] * batch for _ in range(m.num_layers * directions)]
    for b in range(batch):
        n = int(lengths[b])
        layer_in = [x[b, t] for t in range(n)]
        for layer in range(m.num_layers):
            per_direction = []
            for d in range(directions):
                k, sfx = layer * directions + d, ("_reverse" if d else "")
                W_ii, W_if, W_ig, W_io = getattr(m, f"weight_ih_l{layer}{sfx}").chunk(4)
                W_hi, W_hf, W_hg, W_ho = getattr(m, f"weight_hh_l{layer}{sfx}").chunk(4)
                b_ii, b_if, b_ig, b_io = getattr(m, f"bias_ih_l{layer}{sfx}").chunk(4)
                b_hi, b_hf, b_hg, b_ho = getattr(m, f"bias_hh_l{layer}{sfx}").chunk(4)
                p_i, p_f, p_o = getattr(m, f"weight_ch_l{layer}{sfx}").chunk(3)
                h, c = h0[k, b], c0[k, b]
                outs = [None] * n
                for t in reversed(range(n)) if d else range(n):
                    xt = layer_in[t]
                    i = sig(W_ii @ xt + b_ii + W_hi @ h + b_hi + p_i * c)
                    f = sig(W_if @ xt + b_if + W_hf @ h + b_hf + p_f * c)
                    g = torch.tanh(W_ig @ xt + b_ig + W_hg @ h + b_hg)
                    c = f * c + i * g
                    o = sig(W_io @ xt + b_io + W_ho @ h + b_ho + p_o * c)
                    h = o * torch.tanh(c)
                    outs[t] = h
                h_n[k][b], c_n[k][b] = h, c
                per_direction.append(outs)
            layer_in = [torch.cat([o[t] for o in per_direction]) for t in range(n)]
        rows = torch.stack(layer_in)
        outputs.append(torch.cat([rows, rows.new_zeros(steps - n, rows.shape[1])]))
    stack2 = lambda s: torch.stack([torch.stack(row) for row in s])  # noqa: E731
    return torch.stack(outputs), (stack2(h_n), stack2(c_n))


@pytest.mark.parametrize("packed", [False, True])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_peephole_matches_equations(bidirectional, packed):
    torch.manual_seed(5)
    directions = 2 if bidirectional else 1
    m = PeepholeLSTM(N_IN, HID, 2, batch_first=True, bidirectional=bidirectional)
    with torch.no_grad():  # make the peepholes matter
        for name, p in m.named_parameters():
            if "weight_ch" in name:
                p.mul_(3)
    x = torch.randn(3, 5, N_IN)
    lengths = torch.tensor([4, 5, 1]) if packed else torch.tensor([5, 5, 5])
    h0 = torch.randn(2 * directions, 3, HID)
    state = (h0, torch.randn_like(h0))
    ref = run(_Reference(m, lengths), x, state)  # autograd through the equations
    ours = run(m, x, state, lengths if packed else None)
    assert_same(ours, ref)
    # the peepholes change the result
    lstm = nn.LSTM(N_IN, HID, 2, bidirectional=bidirectional, batch_first=True)
    lstm.load_state_dict(m.state_dict(), strict=False)
    assert (lstm(x, state)[0] - ours[0]).abs().max() > 1e-3


class _Reference:
    """peephole_reference as a callable with `m`'s parameters (for `run`)."""

    def __init__(self, m, lengths):
        self.m, self.lengths, self.batch_first = m, lengths, True
        self.named_parameters, self.zero_grad = m.named_parameters, m.zero_grad

    def __call__(self, x, state):
        return peephole_reference(self.m, x, state[0], state[1], self.lengths)


def test_peephole_zero_is_lstm():
    torch.manual_seed(6)
    m = PeepholeLSTM(N_IN, HID, 2, batch_first=True, bidirectional=True)
    lstm = nn.LSTM(N_IN, HID, 2, bidirectional=True, batch_first=True)
    result = m.load_state_dict(lstm.state_dict())  # strict=True
    assert not result.missing_keys and not result.unexpected_keys
    for name, p in m.named_parameters():
        if "weight_ch" in name:
            assert torch.all(p == 0), name
    x = torch.randn(3, 5, N_IN)
    h0 = torch.randn(4, 3, HID)
    state = (h0, torch.randn_like(h0))
    assert_same(run(m, x, state), run(lstm, x, state))
    lengths = torch.tensor([2, 5, 1])
    expected = run(lstm, x, state, lengths, packed_torch=True)
    assert_same(run(m, x, state, lengths), expected)


def test_peephole_state_dict_strictness():
    m = PeepholeLSTM(N_IN, HID)
    sd = nn.LSTM(N_IN, HID).state_dict()
    sd["bogus"] = torch.zeros(1)
    with pytest.raises(RuntimeError, match="bogus"):
        m.load_state_dict(sd)
    sd = nn.LSTM(N_IN, HID).state_dict()
    del sd["weight_hh_l0"]
    with pytest.raises(RuntimeError, match="weight_hh_l0"):
        m.load_state_dict(sd)
    # its own state dict round-trips, peepholes included
    other = PeepholeLSTM(N_IN, HID)
    other.load_state_dict(m.state_dict())
    assert torch.equal(other.weight_ch_l0, m.weight_ch_l0)


@pytest.mark.parametrize("packed", [False, True])
def test_peephole_gradcheck(packed):
    torch.manual_seed(7)
    m = PeepholeLSTM(2, 2, 2, batch_first=True, bidirectional=True).double()
    names = [n for n, _ in m.named_parameters()]
    x = torch.randn(3, 3, 2, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(4, 3, 2, dtype=torch.float64, requires_grad=True)
    c0 = torch.randn(4, 3, 2, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([2, 3, 1]) if packed else None
    params = [p.detach().clone().requires_grad_() for p in m.parameters()]

    def f(x, h0, c0, *params):
        out, (h, c) = torch.func.functional_call(
            m, dict(zip(names, params)), (x, (h0, c0), lengths)
        )
        return out, h, c

    doubled = [2 * p.detach() for p in params]
    assert not torch.allclose(f(x, h0, c0, *params)[0], f(x, h0, c0, *doubled)[0])
    assert torch.autograd.gradcheck(f, (x, h0, c0, *params))


def _layer_inputs(cell, batch_sizes, dtype=torch.float64):
    """Inputs of one layer-direction Function: (x, w_ih, bias, w_hh, ...)."""
    gen = torch.Generator().manual_seed(11)
    H, n_in = 3, 2
    gates = {"rnn": 1, "lstm": 4, "peephole": 4, "gru": 3}[cell] * H
    rows, batch = sum(batch_sizes), batch_sizes[0]

    def rand(*shape):
        return torch.randn(*shape, generator=gen, dtype=dtype).requires_grad_()

    head = (rand(rows, n_in), rand(gates, n_in), rand(gates), rand(gates, H))
    h0 = rand(batch, H)
    if cell == "rnn":
        return head + (h0,)
    if cell == "lstm":
        return head + (h0, rand(batch, H))
    if cell == "peephole":
        return head + (rand(3 * H), h0, rand(batch, H))
    return head + (rand(gates), h0)


FUNCTIONS = {
    "rnn": (RNNKernelFunction.apply, rnn_kernel_plain),
    "lstm": (LSTMKernelFunction.apply, lstm_kernel_plain),
    "peephole": (PeepholeKernelFunction.apply, peephole_kernel_plain),
    "gru": (GRUKernelFunction.apply, gru_kernel_plain),
}


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("batch_sizes", [[3, 3, 3], [4, 3, 3, 1]])
@pytest.mark.parametrize("cell", list(FUNCTIONS))
def test_hand_written_backward(cell, batch_sizes, reverse):
    """Each Function passes gradcheck; the plain (autograd) path: same numbers."""
    function, plain = FUNCTIONS[cell]
    extra = (batch_sizes, reverse) + ((False,) if cell == "rnn" else ())  # tanh
    inputs = _layer_inputs(cell, batch_sizes)
    assert torch.autograd.gradcheck(lambda *a: function(*a, *extra), inputs)

    def via_plain(x, w_ih, bias, *rest):
        return plain(kernel_project(x, w_ih, bias), *rest, *extra)

    got, expected = function(*inputs, *extra), via_plain(*inputs)
    gen = torch.Generator().manual_seed(0)
    weights = [torch.randn(t.shape, generator=gen, dtype=t.dtype) for t in got]
    grads = []
    for outs in (got, expected):
        loss = sum((o * w).sum() for o, w in zip(outs, weights))
        grads.append(torch.autograd.grad(loss, inputs))
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-12)
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)


# ------------------------------------------------------------------------- dropout


@pytest.mark.parametrize("cell", ["rnn_tanh", "lstm", "gru"])
def test_dropout_between_layers(cell):
    torch.manual_seed(8)
    x = torch.randn(3, 5, N_IN)
    lengths = torch.tensor([5, 2, 4])
    ours, theirs = make_pair(cell, 3, True, dropout=0.5)
    ours.eval(), theirs.eval()
    assert_same(run(ours, x, None), run(theirs, x, None))
    ours.train()
    torch.manual_seed(0)
    a = ours(x)[0]
    torch.manual_seed(1)
    b = ours(x)[0]
    assert not torch.allclose(a, b)  # dropout active when training ...
    ours.eval()
    assert not torch.allclose(a, ours(x)[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch warns: dropout with one layer
        single = make_pair(cell, 1, True, dropout=0.5)[0].train()
    torch.manual_seed(0)
    single_a = single(x)[0]
    torch.manual_seed(1)
    assert torch.equal(single_a, single(x)[0])  # ... and never after the last layer
    assert torch.equal(single_a, single.eval()(x)[0])
    ours, theirs = make_pair(cell, 3, True, dropout=0.0)
    ours.train(), theirs.train()
    assert_same(run(ours, x, None), run(theirs, x, None))
    expected = run(theirs, x, None, lengths, packed_torch=True)
    assert_same(run(ours, x, None, lengths), expected)


# -------------------------------------------------------------- script and export


def _all_modules():
    torch.manual_seed(9)
    return [
        CustomRNN(N_IN, HID, 2, "relu", batch_first=True, bidirectional=True),
        CustomLSTM(N_IN, HID, 2, batch_first=True, bidirectional=True),
        CustomGRU(N_IN, HID, 2, False, True, bidirectional=True),  # no bias
        PeepholeLSTM(N_IN, HID, 2, batch_first=True, bidirectional=True),
    ]


class _Tagger(nn.Module):
    """A small model using a kernel module, as the generated models do."""

    def __init__(self, rnn):
        super().__init__()
        self.rnn = rnn
        self.head = nn.Linear(2 * HID, 3)

    def forward(self, x, lengths: Optional[torch.Tensor] = None):
        out, _ = self.rnn(x, None, lengths)
        return self.head(out)


@pytest.mark.parametrize("index", range(4))
def test_torchscript_inference(index):
    model = _Tagger(_all_modules()[index]).eval()
    x = torch.randn(3, 5, N_IN)
    lengths = torch.tensor([2, 5, 3])
    scripted = torch.jit.script(model)
    with torch.no_grad():
        for args in ((x,), (x, lengths)):
            torch.testing.assert_close(scripted(*args), model(*args), atol=1e-6, rtol=0)
    # the recurrent module alone, with an initial state, batch-major off
    rnn = type(model.rnn)(N_IN, HID, 2, batch_first=False).eval()
    xt = x.transpose(0, 1)
    scripted = torch.jit.script(rnn)
    with torch.no_grad():
        a, b = scripted(xt), rnn(xt)
    torch.testing.assert_close(a[0], b[0], atol=1e-6, rtol=0)


@pytest.mark.parametrize("index", [1, 3])
def test_export_inference(index):
    model = _Tagger(_all_modules()[index]).eval()
    x = torch.randn(3, 5, N_IN)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exported = torch.export.export(model, (x,))
    graph_ops = {str(n.target) for n in exported.graph.nodes}
    assert "aten.lstm.input" not in graph_ops  # our kernel, not torch's
    x2 = torch.randn(3, 5, N_IN)
    with torch.no_grad():
        torch.testing.assert_close(exported.module()(x2), model(x2), atol=1e-6, rtol=0)


def test_peephole_follows_dtype_and_reassignment():
    m = PeepholeLSTM(N_IN, HID, batch_first=True).double()
    out, _ = m(torch.randn(2, 3, N_IN, dtype=torch.float64))
    assert out.dtype == torch.float64
    m = PeepholeLSTM(N_IN, HID, batch_first=True)
    x = torch.randn(2, 3, N_IN)
    before = m(x)[0]
    m.weight_ch_l0 = nn.Parameter(torch.zeros(3 * HID))
    after = m(x)[0]
    assert not torch.allclose(before, after)
    lstm = nn.LSTM(N_IN, HID, batch_first=True)
    lstm.load_state_dict(m.state_dict(), strict=False)
    torch.testing.assert_close(after, lstm(x)[0], atol=1e-6, rtol=1e-5)


def test_torch_compile_opt_in():
    """Unpadded input through torch.compile (opt-in) runs the plain steps."""
    torch.manual_seed(10)
    m = PeepholeLSTM(N_IN, HID, 1, batch_first=True, bidirectional=True)
    x = torch.randn(3, 4, N_IN)
    weights = [
        torch.randn(3, 4, 2 * HID),
        torch.randn(2, 3, HID),
        torch.randn(2, 3, HID),
    ]

    def step(model):
        m.zero_grad(set_to_none=True)
        xx = x.clone().requires_grad_()
        out, (h, c) = model(xx)
        sum((t * w).sum() for t, w in zip((out, h, c), weights)).backward()
        grads = [p.grad.clone() for p in m.parameters()]
        return [out.detach(), h.detach(), c.detach(), xx.grad] + grads

    expected = step(m)
    torch._dynamo.reset()
    with torch._dynamo.config.patch(allow_rnn=True):
        got = step(torch.compile(m, backend="aot_eager", fullgraph=True))
    torch._dynamo.reset()
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_eager_runs_the_hand_written_backward():
    expected = ["RNNKernel", "LSTMKernel", "GRUKernel", "PeepholeKernel"]
    for m, name in zip(_all_modules(), expected):
        out, _ = m(torch.randn(2, 3, N_IN), None, torch.tensor([3, 1]))
        seen, stack = set(), [out.grad_fn]
        while stack:
            fn = stack.pop()
            if fn is not None and fn not in seen:
                seen.add(fn)
                stack.extend(f for f, _ in fn.next_functions)
        names = {type(fn).__name__ for fn in seen}
        assert f"{name}FunctionBackward" in names, names
