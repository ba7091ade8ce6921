"""Double backward through the hand-written backwards (issue 11, item 6).

Asked for `create_graph=True` (a gradient penalty), the kernels' and attention's
autograd.Functions must return gradients with a graph: gradgradcheck in float64 for
every cell, both directions, packed and not, and a gradient penalty's own gradient
equal to torch.nn's.
"""

import pytest
import torch
from torch import nn
from torch.autograd import gradgradcheck

import rnnspec
from rnnspec.nn import attention, gru, lstm, peephole, rnn
from rnnspec.nn.attention import AdditiveAttention, DotAttention, GeneralAttention
from rnnspec.nn.gru import CustomGRU, GRUKernelFunction
from rnnspec.nn.lstm import CustomLSTM, LSTMKernelFunction
from rnnspec.nn.peephole import PeepholeKernelFunction, PeepholeLSTM
from rnnspec.nn.rnn import CustomRNN, RNNKernelFunction
from rnnspec.nn.spinn import SpinnModel
from rnnspec.nn.stack import KernelStackBase

F64 = torch.float64
N_IN, HID, BATCH, STEPS = 2, 2, 3, 4
LENGTHS = torch.tensor([2, 4, 3])  # unsorted on purpose
BATCH_SIZES = {"packed": [3, 3, 2, 1], "padded": [3, 3, 3, 3]}
CELLS = {
    "rnn_tanh": (CustomRNN, {"nonlinearity": "tanh"}),
    "rnn_relu": (CustomRNN, {"nonlinearity": "relu"}),
    "lstm": (CustomLSTM, {}),
    "gru": (CustomGRU, {}),
    "peephole": (PeepholeLSTM, {}),
}


def leaf(*shape):
    return torch.randn(*shape, dtype=F64, requires_grad=True)


# ---------------------------------------------------------------------------------
# The autograd.Functions themselves
# ---------------------------------------------------------------------------------


def function_case(cell, batch_sizes, reverse):
    """(apply, tensor inputs) of one layer-direction Function over packed rows."""
    rows, gates = sum(batch_sizes), {"lstm": 4, "peephole": 4, "gru": 3}.get(cell, 1)
    x, h0, c0 = leaf(rows, N_IN), leaf(BATCH, HID), leaf(BATCH, HID)
    w_ih, w_hh = leaf(gates * HID, N_IN), leaf(gates * HID, HID)
    b_ih, b_hh = leaf(gates * HID), leaf(gates * HID)
    if cell.startswith("rnn"):
        relu = cell == "rnn_relu"
        return (
            lambda *t: RNNKernelFunction.apply(*t, batch_sizes, reverse, relu),
            (x, w_ih, b_ih, w_hh, h0),
        )
    if cell == "gru":
        return (
            lambda *t: GRUKernelFunction.apply(*t, batch_sizes, reverse),
            (x, w_ih, b_ih, w_hh, b_hh, h0),
        )
    if cell == "lstm":
        return (
            lambda *t: LSTMKernelFunction.apply(*t, batch_sizes, reverse),
            (x, w_ih, b_ih, w_hh, h0, c0),
        )
    return (
        lambda *t: PeepholeKernelFunction.apply(*t, batch_sizes, reverse),
        (x, w_ih, b_ih, w_hh, leaf(3 * HID), h0, c0),
    )


def assert_graph_gradients_are_the_gradients(apply, inputs):
    """create_graph=True gives the hand-written backward's values, with a graph."""
    outputs = apply(*inputs)
    weights = [torch.randn_like(o) for o in outputs]
    loss = sum((o * w).sum() for o, w in zip(outputs, weights, strict=True))
    with_graph = torch.autograd.grad(loss, inputs, create_graph=True)
    plain = torch.autograd.grad(loss, inputs)
    assert all(g.requires_grad for g in with_graph)
    for g, e in zip(with_graph, plain, strict=True):
        torch.testing.assert_close(g, e)


@pytest.mark.parametrize("layout", sorted(BATCH_SIZES))
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("cell", sorted(CELLS))
def test_kernel_function_gradgradcheck(cell, reverse, layout):
    torch.manual_seed(0)
    apply, inputs = function_case(cell, BATCH_SIZES[layout], reverse)
    assert_graph_gradients_are_the_gradients(apply, inputs)
    assert gradgradcheck(apply, inputs)


def test_one_tensor_passed_twice_gets_each_gradient_once():
    """h0 and c0 the same tensor: its gradient is the sum of theirs, not twice it."""
    torch.manual_seed(0)
    apply, (x, w_ih, b, w_hh, h0, _) = function_case("lstm", [3, 2, 1], False)
    assert_graph_gradients_are_the_gradients(
        lambda x, s: apply(x, w_ih, b, w_hh, s, s), (x, h0)
    )
    assert gradgradcheck(lambda x, s: apply(x, w_ih, b, w_hh, s, s), (x, h0))


def test_query_computed_from_the_values_gets_its_gradient_once():
    """q = 2 o: o's gradient through q comes from autograd, not from backward too."""
    torch.manual_seed(0)
    o = leaf(2, STEPS, 3)

    def apply(o):
        return (attention._ProductAttentionFn.apply(2 * o, o, 2, False),)

    assert_graph_gradients_are_the_gradients(apply, (o,))


# ---------------------------------------------------------------------------------
# The modules, impl custom and auto (ours whenever lengths are given on CPU)
# ---------------------------------------------------------------------------------


def module_function(module, with_lengths):
    """(x, h0[, c0], *parameters) -> outputs and final states, for gradgradcheck."""
    names = [n for n, _ in module.named_parameters()]
    lstm = isinstance(module, nn.LSTM)
    lengths = LENGTHS if with_lengths else None

    def run(x, h0, c0, *params):
        weights = dict(zip(names, params, strict=True))
        hx = (h0, c0) if lstm else h0
        out, state = torch.func.functional_call(module, weights, (x, hx, lengths))
        return (out, *state) if lstm else (out, state)

    return run


def module_inputs(module):
    states = module.num_layers * (2 if module.bidirectional else 1)
    x = leaf(BATCH, STEPS, N_IN)
    h0, c0 = leaf(states, BATCH, HID), leaf(states, BATCH, HID)
    params = [p.detach().clone().requires_grad_() for p in module.parameters()]
    return (x, h0, c0, *params)


def make_module(cell, impl="custom", **kw):
    cls, extra = CELLS[cell]
    kw = dict(batch_first=True, **extra, **kw)
    return cls(N_IN, HID, impl=impl, **kw).to(F64)


STACKS = [  # (bidirectional, layers, with_lengths)
    (bidirectional, layers, with_lengths)
    for bidirectional in (False, True)
    for layers in (1, 2)
    for with_lengths in (False, True)
    if bidirectional or layers == 1 or with_lengths  # 2 uni layers: packed only
]


@pytest.mark.parametrize("bidirectional, layers, with_lengths", STACKS)
@pytest.mark.parametrize("cell", sorted(CELLS))
def test_module_gradgradcheck(cell, bidirectional, layers, with_lengths):
    torch.manual_seed(0)
    module = make_module(cell, num_layers=layers, bidirectional=bidirectional)
    inputs = module_inputs(module)
    assert gradgradcheck(module_function(module, with_lengths), inputs, fast_mode=True)


@pytest.mark.parametrize("cell", sorted(CELLS))
def test_impl_auto_with_lengths_on_cpu_gradgradcheck(cell):
    torch.manual_seed(0)
    module = make_module(cell, impl="auto", bidirectional=True)
    x = torch.zeros(BATCH, STEPS, N_IN, dtype=F64)
    assert not module._kernel_defers_to_torch(x, LENGTHS)  # ours, not torch's
    assert gradgradcheck(
        module_function(module, True), module_inputs(module), fast_mode=True
    )


@pytest.mark.parametrize("cell", ["rnn_tanh", "gru", "peephole"])
def test_no_bias_gradgradcheck(cell):
    torch.manual_seed(0)
    module = make_module(cell, bias=False, bidirectional=True)
    assert gradgradcheck(
        module_function(module, True), module_inputs(module), fast_mode=True
    )


# ---------------------------------------------------------------------------------
# Gradient penalty against torch.nn's modules
# ---------------------------------------------------------------------------------

TORCH_CELLS = {
    "rnn_tanh": nn.RNN,
    "rnn_relu": nn.RNN,
    "lstm": nn.LSTM,
    "gru": nn.GRU,
}


def penalised_gradients(module, x, lengths, weight):
    """Gradients of loss + |d loss / dx|², loss a fixed linear map of the outputs."""
    x = x.clone().requires_grad_()
    if lengths is None:
        out, _ = module(x)
    elif isinstance(module, KernelStackBase):
        out, _ = module(x, None, lengths)
    else:  # torch's own module: through pack_padded_sequence
        packed = nn.utils.rnn.pack_padded_sequence(
            x, lengths, batch_first=True, enforce_sorted=False
        )
        out, _ = module(packed)
        out, _ = nn.utils.rnn.pad_packed_sequence(
            out, batch_first=True, total_length=x.shape[1]
        )
    loss = (out * weight).sum()
    (grad_x,) = torch.autograd.grad(loss, x, create_graph=True)
    penalty = grad_x.pow(2).sum()
    module.zero_grad(set_to_none=True)
    (loss + penalty).backward()
    return [x.grad] + [p.grad for p in module.parameters()]


@pytest.mark.parametrize("impl", ["custom", "auto"])
@pytest.mark.parametrize("with_lengths", [False, True], ids=["padded", "lengths"])
@pytest.mark.parametrize("cell", sorted(TORCH_CELLS))
def test_gradient_penalty_equals_torch(cell, with_lengths, impl):
    torch.manual_seed(0)
    _, extra = CELLS[cell]
    kw = dict(num_layers=2, bidirectional=True, batch_first=True, **extra)
    ours = CELLS[cell][0](3, 4, impl=impl, **kw).to(F64)
    theirs = TORCH_CELLS[cell](3, 4, **kw).to(F64)
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(BATCH, 5, 3, dtype=F64)
    lengths = torch.tensor([3, 5, 1]) if with_lengths else None
    weight = torch.randn(BATCH, 5, 8, dtype=F64)
    got = penalised_gradients(ours, x, lengths, weight)
    expected = penalised_gradients(theirs, x, lengths, weight)
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e)


def test_peephole_with_zero_peepholes_penalty_equals_torch_lstm():
    torch.manual_seed(0)
    theirs = nn.LSTM(3, 4, batch_first=True, bidirectional=True).to(F64)
    ours = PeepholeLSTM(3, 4, batch_first=True, bidirectional=True).to(F64)
    ours.load_state_dict(theirs.state_dict())  # peepholes zero
    x, weight = torch.randn(BATCH, 5, 3, dtype=F64), torch.randn(BATCH, 5, 8, dtype=F64)
    lengths = torch.tensor([3, 5, 1])
    got = penalised_gradients(ours, x, lengths, weight)
    expected = penalised_gradients(theirs, x, lengths, weight)
    for g, e in zip(got[: len(expected)], expected, strict=True):
        torch.testing.assert_close(g, e)
    assert all(g.abs().sum() > 0 for g in got[len(expected) :])  # the peepholes'


def test_first_order_backward_does_no_recomputation(monkeypatch):
    """The ordinary backward stays the hand-written one: no second forward."""

    def forbidden(*args):
        raise AssertionError("recomputed the forward without create_graph")

    for home in (rnn, lstm, peephole, gru, attention):  # each binds its own name
        monkeypatch.setattr(home, "kernel_recompute_grads", forbidden)
    for cell in CELLS:
        module = make_module(cell, bidirectional=True)
        x = torch.randn(BATCH, STEPS, N_IN, dtype=F64, requires_grad=True)
        out, _ = module(x, None, LENGTHS)
        out.sum().backward()
    for kind in (DotAttention, GeneralAttention, AdditiveAttention):
        o = torch.randn(BATCH, STEPS, 3, requires_grad=True)
        kind(3)(o).sum().backward()
    with pytest.raises(AssertionError, match="without create_graph"):
        out, _ = make_module("lstm")(x, None, LENGTHS)
        torch.autograd.grad(out.sum(), x, create_graph=True)


# ---------------------------------------------------------------------------------
# Attention and instantiated models
# ---------------------------------------------------------------------------------


@pytest.mark.parametrize("scale", [False, True])
@pytest.mark.parametrize("mask", ["causal", "strict"])
@pytest.mark.parametrize("kind", [DotAttention, GeneralAttention, AdditiveAttention])
def test_attention_gradgradcheck(kind, mask, scale):
    torch.manual_seed(0)
    module = kind(3, mask=mask, scale=scale).to(F64)
    module.max_rows = 2  # two blocks of query rows
    names = [n for n, _ in module.named_parameters()]
    params = [p.detach().clone().requires_grad_() for p in module.parameters()]

    def run(o, *params):
        weights = dict(zip(names, params, strict=True))
        return torch.func.functional_call(module, weights, (o,))

    assert gradgradcheck(run, (leaf(2, STEPS, 3), *params))


def test_scripted_additive_attention_trains():
    """The plain blocks (TorchScript's path) must not break their own backward."""
    torch.manual_seed(0)
    eager = AdditiveAttention(3, mask="strict").to(F64)
    scripted = torch.jit.script(eager)
    o = leaf(2, STEPS, 3)
    expected = torch.autograd.grad(eager(o).sum(), [o, *eager.parameters()])
    got = torch.autograd.grad(scripted(o).sum(), [o, *eager.parameters()])
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e)


SPECS = {
    "rnn_relu": "cell rnn nonlinearity=relu\n directions 2",
    "lstm": "cell lstm\n layers 2\n directions 2",
    "gru": "cell gru\n directions 2\n attention additive mask=strict",
    "peephole": "cell lstm\n peephole true\n directions 2\n attention general",
    "lstm_dot": "cell lstm\n attention dot scale=true",
}


@pytest.mark.parametrize("impl", ["custom", "auto"])
@pytest.mark.parametrize("name", sorted(SPECS))
def test_instantiated_model_gradgradcheck(name, impl):
    text = (
        "model M {\n input features 2\n hidden 2\n packing true\n head linear 2\n"
        f" impl {impl}\n {SPECS[name]}\n}}\n"
    )
    torch.manual_seed(0)
    model = rnnspec.instantiate(rnnspec.parse(text)[0]).to(F64)

    def run(x):
        out, _ = model(x, LENGTHS)
        return out

    assert gradgradcheck(run, (leaf(BATCH, STEPS, 2),))


@pytest.mark.parametrize("tracker", [0, 2])
def test_spinn_gradgradcheck(tracker):
    """SPINN's table Functions have differentiable backwards: a guard, not a fix."""
    torch.manual_seed(0)
    model = SpinnModel(6, 2, 2, tracker_size=tracker).to(F64)
    tokens = torch.tensor([[2, 3, 4], [5, 0, 0]])
    transitions = torch.tensor([[0, 0, 1, 0, 1], [0, 2, 2, 2, 2]])  # SHIFT 0, REDUCE 1
    x = model.embedding(tokens).detach().requires_grad_()
    names = [n for n, _ in model.encoder.named_parameters()]
    params = [p.detach().clone().requires_grad_() for p in model.encoder.parameters()]

    def run(x, *params):
        weights = dict(zip(names, params, strict=True))
        return torch.func.functional_call(model.encoder, weights, (x, transitions))

    assert gradgradcheck(run, (x, *params), fast_mode=True)
