"""How the kernels run (issue 15): oneDNN's products at sizes that take them, the
steps on one thread, a backward that writes over its saved gates (and recomputes
them for a second one), the span helpers, and the batch-first copies."""

import copy

import pytest
import torch
from torch import nn

from rnnspec.nn import kernel as kernel_module
from rnnspec.nn.gru import CustomGRU
from rnnspec.nn.kernel import (
    KERNEL_DOUBLE_STEPS,
    KernelStepWeight,
    kernel_offsets,
    kernel_onednn,
    kernel_prev_range,
    kernel_prev_rows,
    kernel_prev_weight_grad,
    kernel_project,
    kernel_spans,
)
from rnnspec.nn.lngru import LayerNormGRU
from rnnspec.nn.lnlstm import LayerNormLSTM
from rnnspec.nn.lstm import CustomLSTM
from rnnspec.nn.peephole import PeepholeLSTM
from rnnspec.nn.rnn import CustomRNN
from tests.nn.test_kernels import FUNCTIONS, _layer_inputs

BATCH_SIZES = {"uniform": [3, 3, 3, 3], "packed": [4, 3, 3, 1, 1]}


def training_grads(model, x, lengths=None, retain=False):
    """Output, final states and every gradient of a fixed random loss (the same
    loss in every dtype)."""
    x = x.clone().requires_grad_()
    out, state = model(x) if lengths is None else model(x, None, lengths)
    states = state if isinstance(state, tuple) else (state,)
    gen = torch.Generator().manual_seed(3)
    loss = sum(
        (t * torch.randn(t.shape, generator=gen, dtype=torch.float64).to(t)).sum()
        for t in (out, *states)
    )
    tensors = [x, *model.parameters()]
    return [out, *states], torch.autograd.grad(loss, tensors, retain_graph=retain)


# (ours, torch's, extra, hidden size): sizes whose step products take oneDNN
# (over 2^19 multiply-adds: batch 8 × gates × hidden)
ONEDNN_CELLS = {
    "lstm": (CustomLSTM, nn.LSTM, {}, 160),
    "gru": (CustomGRU, nn.GRU, {}, 160),
    "rnn_tanh": (CustomRNN, nn.RNN, {"nonlinearity": "tanh"}, 384),
    "rnn_relu": (CustomRNN, nn.RNN, {"nonlinearity": "relu"}, 384),
}


@pytest.mark.parametrize("cell", sorted(ONEDNN_CELLS))
def test_onednn_products_match_torch(cell):
    """Sizes where the steps multiply on oneDNN: torch's outputs and gradients."""
    ours_cls, torch_cls, extra, hidden = ONEDNN_CELLS[cell]
    torch.manual_seed(0)
    ours = ours_cls(16, hidden, 2, batch_first=True, bidirectional=True, **extra)
    theirs = torch_cls(16, hidden, 2, batch_first=True, bidirectional=True, **extra)
    theirs.load_state_dict(ours.state_dict())
    w = ours.weight_hh_l0
    assert kernel_onednn(w) == KernelStepWeight(w, 8, 4).onednn
    assert not KernelStepWeight(w[: 2**19 // (8 * w.shape[1])], 8, 4).onednn  # 2^19
    x = torch.randn(8, 4, 16)
    got, got_grads = training_grads(ours, x)
    expected, expected_grads = training_grads(theirs, x)
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-4)
    for a, b in zip(got_grads, expected_grads, strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


# layer-normalised cells at sizes whose products take oneDNN in float32
NORM_CELLS = {
    "lnlstm": lambda: LayerNormLSTM(16, 128, bidirectional=True, peephole=True),
    "lngru": lambda: LayerNormGRU(16, 160, bidirectional=True),
}


@pytest.mark.parametrize("cell", sorted(NORM_CELLS))
def test_layer_norm_cells_on_onednn_match_float64(cell):
    """float32 steps on oneDNN give, to float32 rounding, the outputs and
    gradients of the same model in float64 (torch.mm: no oneDNN there)."""
    torch.manual_seed(4)
    ours = NORM_CELLS[cell]()
    with torch.no_grad():
        for p in ours.parameters():  # gains and peepholes away from 1 and 0
            p.add_(torch.randn_like(p), alpha=0.1)
    assert KernelStepWeight(ours.weight_hh_l0, 16, 6).onednn == kernel_onednn(
        ours.weight_hh_l0
    )
    wide = copy.deepcopy(ours).double()
    x = torch.randn(6, 16, 16)
    lengths = torch.tensor([6, 5, 6, 2, 1, 6, 3, 4, 6, 6, 5, 1, 2, 6, 4, 3])
    got, got_grads = training_grads(ours, x, lengths)
    expected, expected_grads = training_grads(wide, x.double(), lengths)
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a.double(), b, atol=2e-5, rtol=1e-4)
    for a, b in zip(got_grads, expected_grads, strict=True):
        torch.testing.assert_close(a.double(), b, atol=2e-4, rtol=1e-4)


def test_step_weight_below_the_threshold_keeps_torch_mm():
    w = torch.randn(24, 6)
    assert not KernelStepWeight(w, 3, 100).onednn  # 3 × 144 multiply-adds a step
    x = torch.randn(3, 6)
    torch.testing.assert_close(KernelStepWeight(w, 3, 100).mm(x), x @ w.t())


MODULES = {
    "lstm": lambda: CustomLSTM(5, 6, 2, bidirectional=True, dtype=torch.float64),
    "peephole": lambda: PeepholeLSTM(5, 6, 2, bidirectional=True, dtype=torch.float64),
    "gru": lambda: CustomGRU(5, 6, 2, bidirectional=True, dtype=torch.float64),
}


@pytest.mark.parametrize("zoneout", [0.0, 0.3])
@pytest.mark.parametrize("name", sorted(MODULES))
def test_second_backward_gives_the_same_gradients(name, zoneout):
    """Backward writes over the saved gates; a second one (retain_graph) finds
    them spent and recomputes them: the same gradients, bit for bit."""
    torch.manual_seed(1)
    model = MODULES[name]()
    model.zoneout = zoneout
    if name != "gru":
        model.zoneout_cell = zoneout
    x = torch.randn(6, 4, 5, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([6, 2, 5, 1])
    out, state = model(x, None, lengths)
    states = state if isinstance(state, tuple) else (state,)
    loss = out.square().sum() + sum(s.sum() for s in states)
    tensors = [x, *model.parameters()]
    first = torch.autograd.grad(loss, tensors, retain_graph=True)
    second = torch.autograd.grad(loss, tensors)
    for a, b in zip(first, second, strict=True):
        assert torch.equal(a, b)


# every cell, layer-normalised ones too (their steps run on the same engine)
THREAD_MODULES = {
    **MODULES,
    "rnn": lambda: CustomRNN(5, 6, 2, dtype=torch.float64),
    "lnlstm": lambda: LayerNormLSTM(5, 6, 2, dtype=torch.float64, peephole=True),
    "lngru": lambda: LayerNormGRU(5, 6, 2, bidirectional=True, dtype=torch.float64),
}


@pytest.mark.parametrize("name", sorted(THREAD_MODULES))
def test_steps_run_on_one_thread_and_the_count_comes_back(name, monkeypatch):
    """With torch on 2 threads, every step product runs on 1, the count is 2
    again after forward and backward (the products of all rows are too small
    here to earn a second thread)."""
    model = THREAD_MODULES[name]()
    seen = []
    mm = KernelStepWeight.mm

    def recording(self, x):
        seen.append(torch.get_num_threads())
        return mm(self, x)

    monkeypatch.setattr(KernelStepWeight, "mm", recording)
    monkeypatch.setattr(KernelStepWeight, "addmm_", lambda s, o, x: o.add_(s.mm(x)))
    if not kernel_module.kernel_backends()[1]:
        pytest.skip("ATen's threads are not OpenMP's here: the count stays")
    torch.set_num_threads(2)
    x = torch.randn(7, 3, 5, dtype=torch.float64, requires_grad=True)
    out, _ = model(x)
    assert torch.get_num_threads() == 2
    out.sum().backward()
    assert torch.get_num_threads() == 2
    assert seen and set(seen) == {1}


@pytest.mark.parametrize("layout", sorted(BATCH_SIZES))
@pytest.mark.parametrize("reverse", [False, True])
def test_prev_range_and_weight_grad_match_prev_rows(layout, reverse):
    """Any span's previous states, and dzᵀ h_prev, equal kernel_prev_rows'."""
    batch_sizes = BATCH_SIZES[layout]
    seq = torch.randn(sum(batch_sizes), 3, dtype=torch.float64)
    init = torch.randn(batch_sizes[0], 3, dtype=torch.float64)
    full = kernel_prev_rows(seq, init, batch_sizes, reverse)
    offsets = kernel_offsets(batch_sizes)
    steps = len(batch_sizes)
    for t0 in range(steps):
        for t1 in range(t0 + 1, steps + 1):
            got = kernel_prev_range(seq, init, batch_sizes, offsets, reverse, (t0, t1))
            assert torch.equal(got, full[offsets[t0] : offsets[t1]])
    dz = torch.randn(sum(batch_sizes), 5, dtype=torch.float64)
    torch.testing.assert_close(
        kernel_prev_weight_grad(dz, seq, init, batch_sizes, reverse), dz.t() @ full
    )


@pytest.mark.parametrize("layout", sorted(BATCH_SIZES))
@pytest.mark.parametrize("reverse", [False, True])
def test_spans_cover_the_steps_in_backward_order(layout, reverse):
    batch_sizes = BATCH_SIZES[layout]
    spans = kernel_spans(batch_sizes, reverse, 2)
    steps = [t for t0, t1 in spans for t in range(t0, t1)]
    assert sorted(steps) == list(range(len(batch_sizes)))
    starts = [t0 for t0, _ in spans]
    assert starts == sorted(starts, reverse=not reverse)  # backward runs t descending
    assert all(t1 > t0 for t0, t1 in spans)


def test_batch_first_output_is_its_own_contiguous_tensor():
    """Eager batch-first output: a copy (on the kernel's threads), not a view."""
    model = CustomLSTM(64, 6, batch_first=True)
    x = torch.randn(8, 64, 64, requires_grad=True)  # 2^15 elements: copied
    out, _ = model(x)
    assert out.is_contiguous() and out.shape == (8, 64, 6)
    expected = model(x.transpose(0, 1).contiguous().transpose(0, 1))[0]
    torch.testing.assert_close(out, expected)
    out.sum().backward()
    assert x.grad is not None and x.grad.is_contiguous()


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("cell", ["lstm", "peephole", "gru", "rnn"])
def test_long_layers_double_their_tanh_gates(cell, reverse):
    """From KERNEL_DOUBLE_STEPS steps a layer activates its tanh gates with a
    sigmoid on doubled weights: the plain steps' numbers and gradients still."""
    batch_sizes = [3] * (KERNEL_DOUBLE_STEPS - 4) + [2] * 5 + [1]
    function, plain = FUNCTIONS[cell]
    extra = (batch_sizes, reverse) + ((False,) if cell == "rnn" else ())
    inputs = _layer_inputs(cell, batch_sizes)
    got = function(*inputs, *extra)
    expected = plain(kernel_project(*inputs[:3]), *inputs[3:], *extra)
    gen = torch.Generator().manual_seed(0)
    weights = [torch.randn(t.shape, generator=gen, dtype=t.dtype) for t in got]
    grads = [
        torch.autograd.grad(sum((o * w).sum() for o, w in zip(outs, weights)), inputs)
        for outs in (got, expected)
    ]
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-12)
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)
