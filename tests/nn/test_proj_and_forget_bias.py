"""Issue 13: `proj_size` and `forget_bias` on CustomLSTM and PeepholeLSTM.

proj: torch's `nn.LSTM(proj_size=P)` exactly (h_t = W_hr (o ⊙ tanh(c_t)), h P wide,
c H wide) on our kernel and on torch's, compared with shared weights (state dicts
loaded both ways): outputs, final states and every gradient, 1-3 layers, both
directions, padded, lengths and PackedSequence. With peepholes: zero peepholes give
nn.LSTM(proj_size), others a plain loop written from the equations (float64). The
hand-written backward passes gradcheck and, through the plain steps, gradgradcheck.

forget_bias: torch's LSTM under the same seed with the forget slices set by hand.
"""

import math
import warnings

import pytest
import torch
from torch import nn
from torch.autograd import gradcheck, gradgradcheck

from rnnspec.nn.kernel import kernel_project
from rnnspec.nn.lstm import CustomLSTM, LSTMKernelFunction, lstm_kernel_plain
from rnnspec.nn.peephole import (
    PeepholeKernelFunction,
    PeepholeLSTM,
    peephole_kernel_plain,
)

F64 = torch.float64
N_IN, HID, PROJ = 3, 5, 2
LENGTHS = torch.tensor([3, 5, 1, 4])  # unsorted on purpose
BATCH, STEPS = 4, 5


def proj_pair(layers, bidirectional, impl="custom", cls=CustomLSTM, **kw):
    """Ours and nn.LSTM(proj_size), batch-first, ours' weights loaded into torch's."""
    args = dict(num_layers=layers, bidirectional=bidirectional, batch_first=True)
    ours = cls(N_IN, HID, proj_size=PROJ, impl=impl, **args, **kw)
    theirs = nn.LSTM(N_IN, HID, proj_size=PROJ, **args)
    if cls is PeepholeLSTM:
        ours.load_state_dict(theirs.state_dict())  # peepholes load as zero
    else:
        theirs.load_state_dict(ours.state_dict())
    return ours, theirs


def initial_states(module, dtype=torch.float32):
    rows = module.num_layers * (2 if module.bidirectional else 1)
    h0 = torch.randn(rows, BATCH, PROJ, dtype=dtype)
    return h0, torch.randn(rows, BATCH, HID, dtype=dtype)


def run(module, x, state, mode):
    """Output (padded), h_n, c_n, and the gradients of a fixed linear loss."""
    module.zero_grad(set_to_none=True)
    x = x.clone().requires_grad_()
    if state is not None:
        state = tuple(s.clone().requires_grad_() for s in state)
    if mode == "padded":
        out, final = module(x, state)
    elif mode == "lengths" and isinstance(module, CustomLSTM):
        out, final = module(x, state, LENGTHS)
    else:  # a PackedSequence (torch's module takes lengths this way)
        packed = nn.utils.rnn.pack_padded_sequence(
            x, LENGTHS, batch_first=True, enforce_sorted=False
        )
        out, final = module(packed, state)
        out, _ = nn.utils.rnn.pad_packed_sequence(
            out, batch_first=True, total_length=STEPS
        )
    results = [out, *final]
    gen = torch.Generator().manual_seed(7)
    loss = sum(
        (t * torch.randn(t.shape, generator=gen, dtype=t.dtype)).sum() for t in results
    )
    loss.backward()
    grads = {"x": x.grad}
    for k, s in enumerate(state or ()):
        grads[f"state{k}"] = s.grad
    for name, p in module.named_parameters():
        grads[name] = p.grad
    return [r.detach() for r in results], grads


def assert_same(got, expected, atol=1e-5, skip=()):
    for a, b in zip(got[0], expected[0], strict=True):
        torch.testing.assert_close(a, b, atol=atol, rtol=1e-5)
    assert set(expected[1]) - set(skip) <= set(got[1])
    for name in sorted(set(expected[1]) - set(skip)):
        assert got[1][name] is not None, name
        torch.testing.assert_close(
            got[1][name], expected[1][name], atol=10 * atol, rtol=1e-4, msg=name
        )


# ------------------------------------------------------------------ proj vs torch

MODES = ["padded", "lengths", "packed"]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("impl", ["custom", "auto"])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("layers", [1, 2, 3])
def test_proj_matches_torch(layers, bidirectional, impl, mode):
    torch.manual_seed(layers)
    ours, theirs = proj_pair(layers, bidirectional, impl)
    x = torch.randn(BATCH, STEPS, N_IN)
    for state in (None, initial_states(ours)):
        got = run(ours, x, state, mode)
        assert_same(got, run(theirs, x, state, mode))
    directions = 2 if bidirectional else 1
    assert got[0][0].shape == (BATCH, STEPS, directions * PROJ)
    assert got[0][1].shape == (layers * directions, BATCH, PROJ)
    assert got[0][2].shape == (layers * directions, BATCH, HID)


def test_proj_state_dicts_load_both_ways():
    torch.manual_seed(0)
    theirs = nn.LSTM(N_IN, HID, 2, batch_first=True, bidirectional=True, proj_size=PROJ)
    ours = CustomLSTM(
        N_IN, HID, 2, batch_first=True, bidirectional=True, proj_size=PROJ
    )
    ours.load_state_dict(theirs.state_dict())  # torch's into ours
    x = torch.randn(BATCH, STEPS, N_IN)
    assert_same(run(ours, x, None, "lengths"), run(theirs, x, None, "packed"))
    assert [n for n, _ in ours.named_parameters()] == [
        n for n, _ in theirs.named_parameters()
    ]
    torch.manual_seed(0)
    same_seed = CustomLSTM(
        N_IN, HID, 2, batch_first=True, bidirectional=True, proj_size=PROJ
    )
    for name, p in theirs.state_dict().items():  # same seed, same weights
        assert torch.equal(same_seed.state_dict()[name], p), name


def test_impl_auto_runs_our_kernel_with_lengths_on_cpu_and_torchs_otherwise():
    ours, _ = proj_pair(1, True, "auto")
    x = torch.randn(BATCH, STEPS, N_IN)
    with_lengths = {
        type(f).__name__ for f in graph_functions(ours(x, None, LENGTHS)[0])
    }
    assert "LSTMKernelFunctionBackward" in with_lengths
    padded = {type(f).__name__ for f in graph_functions(ours(x)[0])}
    assert "LSTMKernelFunctionBackward" not in padded  # torch's own proj kernel
    torch_impl = proj_pair(1, True, "torch")[0]
    padded = {
        type(f).__name__ for f in graph_functions(torch_impl(x, None, LENGTHS)[0])
    }
    assert "LSTMKernelFunctionBackward" not in padded


def graph_functions(tensor):
    seen, stack = set(), [tensor.grad_fn]
    while stack:
        fn = stack.pop()
        if fn is not None and fn not in seen:
            seen.add(fn)
            stack.extend(f for f, _ in fn.next_functions)
    return seen


@pytest.mark.parametrize("cls", [CustomLSTM, PeepholeLSTM])
def test_proj_state_shapes_are_checked_as_torch(cls):
    ours = cls(N_IN, HID, proj_size=PROJ, batch_first=True)
    x = torch.randn(BATCH, STEPS, N_IN)
    wide_h = (torch.zeros(1, BATCH, HID), torch.zeros(1, BATCH, HID))
    with pytest.raises(RuntimeError, match=r"Expected hidden\[0\] size \(1, 4, 2\)"):
        ours(x, wide_h)
    narrow_c = (torch.zeros(1, BATCH, PROJ), torch.zeros(1, BATCH, PROJ))
    with pytest.raises(RuntimeError, match=r"Expected hidden\[1\] size \(1, 4, 5\)"):
        ours(x, narrow_c)


@pytest.mark.parametrize("cls", [CustomLSTM, PeepholeLSTM])
def test_proj_unbatched_input(cls):
    torch.manual_seed(1)
    ours = cls(N_IN, HID, 2, proj_size=PROJ, bidirectional=True)
    theirs = nn.LSTM(N_IN, HID, 2, proj_size=PROJ, bidirectional=True)
    theirs.load_state_dict(ours.state_dict(), strict=False)
    if cls is PeepholeLSTM:
        ours.load_state_dict(theirs.state_dict())
    x = torch.randn(STEPS, N_IN)  # (T, I)
    (out, (h, c)), (out_t, (h_t, c_t)) = ours(x), theirs(x)
    assert (
        out.shape == (STEPS, 2 * PROJ) and h.shape == (4, PROJ) and c.shape == (4, HID)
    )
    for a, b in ((out, out_t), (h, h_t), (c, c_t)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------- peephole and proj


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("bidirectional", [False, True])
def test_peephole_proj_with_zero_peepholes_is_torchs_proj_lstm(bidirectional, mode):
    torch.manual_seed(2)
    ours, theirs = proj_pair(2, bidirectional, "custom", PeepholeLSTM)
    x = torch.randn(BATCH, STEPS, N_IN)
    state = initial_states(ours)
    got = run(ours, x, state, mode)
    assert_same(got, run(theirs, x, state, mode))
    assert all(got[1][n].abs().sum() > 0 for n in ours._peephole_names)


def reference_peephole_proj(module, x, lengths, h0, c0):
    """PeepholeLSTM with proj from the equations, one sequence and step at a time.

    x (B, T, I) batch-first; returns the padded outputs, h_n and c_n.
    """
    H, directions = module.hidden_size, 2 if module.bidirectional else 1
    batch, steps = x.shape[0], x.shape[1]
    inputs = [x[b, : int(lengths[b])] for b in range(batch)]
    h_n, c_n = [], []
    for layer in range(module.num_layers):
        outputs = [[] for _ in range(batch)]
        for d in range(directions):
            s = f"l{layer}" + ("_reverse" if d else "")
            w_ih, w_hh = (
                getattr(module, "weight_ih_" + s),
                getattr(module, "weight_hh_" + s),
            )
            b = getattr(module, "bias_ih_" + s) + getattr(module, "bias_hh_" + s)
            w_hr = getattr(module, "weight_hr_" + s)
            p_i, p_f, p_o = getattr(module, "weight_ch_" + s).chunk(3)
            k = layer * directions + d
            finals_h, finals_c = [], []
            for n in range(batch):
                h, c = h0[k, n], c0[k, n]
                order = range(len(inputs[n]))
                outs = [None] * len(inputs[n])
                for t in reversed(order) if d else order:
                    a = w_ih @ inputs[n][t] + w_hh @ h + b
                    i = torch.sigmoid(a[:H] + p_i * c)
                    f = torch.sigmoid(a[H : 2 * H] + p_f * c)
                    g = torch.tanh(a[2 * H : 3 * H])
                    c = f * c + i * g
                    o = torch.sigmoid(a[3 * H :] + p_o * c)
                    h = w_hr @ (o * torch.tanh(c))
                    outs[t] = h
                outputs[n].append(torch.stack(outs))
                finals_h.append(h)
                finals_c.append(c)
            h_n.append(torch.stack(finals_h))
            c_n.append(torch.stack(finals_c))
        inputs = [torch.cat(o, 1) for o in outputs]
    padded = torch.zeros(batch, steps, inputs[0].shape[1], dtype=x.dtype)
    for n in range(batch):
        padded[n, : len(inputs[n])] = inputs[n]
    return padded, torch.stack(h_n), torch.stack(c_n)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("bidirectional", [False, True])
def test_peephole_proj_matches_the_equations(bidirectional, mode):
    torch.manual_seed(3)
    module = PeepholeLSTM(
        N_IN, HID, 2, batch_first=True, bidirectional=bidirectional, proj_size=PROJ
    ).to(F64)
    x = torch.randn(BATCH, STEPS, N_IN, dtype=F64)
    h0, c0 = initial_states(module, F64)
    got = run(module, x, (h0, c0), mode)
    lengths = torch.full((BATCH,), STEPS) if mode == "padded" else LENGTHS
    module.zero_grad(set_to_none=True)
    xs, h0s, c0s = (t.clone().requires_grad_() for t in (x, h0, c0))
    results = reference_peephole_proj(module, xs, lengths, h0s, c0s)
    gen = torch.Generator().manual_seed(7)
    loss = sum(
        (t * torch.randn(t.shape, generator=gen, dtype=F64)).sum() for t in results
    )
    loss.backward()
    grads = {"x": xs.grad, "state0": h0s.grad, "state1": c0s.grad}
    grads.update((n, p.grad) for n, p in module.named_parameters())
    assert_same(got, ([r.detach() for r in results], grads), atol=1e-10)


# ------------------------------------------------- hand-written backward, float64


def function_case(cell, batch_sizes, reverse):
    """(apply, plain, tensor inputs) of one projected layer-direction Function."""
    rows, batch = sum(batch_sizes), max(batch_sizes)

    def leaf(*shape):
        return torch.randn(*shape, dtype=F64, requires_grad=True)

    x, w_ih, bias = leaf(rows, N_IN), leaf(4 * HID, N_IN), leaf(4 * HID)
    w_hh, w_hr = leaf(4 * HID, PROJ), leaf(PROJ, HID)
    h0, c0 = leaf(batch, PROJ), leaf(batch, HID)
    if cell == "lstm":
        inputs = (x, w_ih, bias, w_hh, h0, c0, w_hr)

        def apply(x, w_ih, bias, w_hh, h0, c0, w_hr):
            args = (h0, c0, batch_sizes, reverse, w_hr)
            return LSTMKernelFunction.apply(x, w_ih, bias, w_hh, *args)

        def plain(x, w_ih, bias, w_hh, h0, c0, w_hr):
            xw = kernel_project(x, w_ih, bias)
            return lstm_kernel_plain(xw, w_hh, h0, c0, batch_sizes, reverse, w_hr)

        return apply, plain, inputs
    inputs = (x, w_ih, bias, w_hh, leaf(3 * HID), h0, c0, w_hr)

    def apply(x, w_ih, bias, w_hh, peep, h0, c0, w_hr):
        args = (peep, h0, c0, batch_sizes, reverse, w_hr)
        return PeepholeKernelFunction.apply(x, w_ih, bias, w_hh, *args)

    def plain(x, w_ih, bias, w_hh, peep, h0, c0, w_hr):
        xw = kernel_project(x, w_ih, bias)
        args = (batch_sizes, reverse, w_hr)
        return peephole_kernel_plain(xw, w_hh, peep, h0, c0, *args)

    return apply, plain, inputs


BATCH_SIZES = {"padded": [3, 3, 3], "packed": [4, 3, 3, 1]}


@pytest.mark.parametrize("layout", sorted(BATCH_SIZES))
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("cell", ["lstm", "peephole"])
def test_projected_function_gradcheck_and_plain_steps(cell, reverse, layout):
    torch.manual_seed(4)
    apply, plain, inputs = function_case(cell, BATCH_SIZES[layout], reverse)
    assert gradcheck(apply, inputs)
    got, expected = apply(*inputs), plain(*inputs)
    weights = [torch.randn_like(t) for t in got]
    grads = []
    for outs in (got, expected):
        loss = sum((o * w).sum() for o, w in zip(outs, weights, strict=True))
        grads.append(torch.autograd.grad(loss, inputs))
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-12)
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("layout", sorted(BATCH_SIZES))
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("cell", ["lstm", "peephole"])
def test_projected_function_gradgradcheck(cell, reverse, layout):
    torch.manual_seed(5)
    apply, _, inputs = function_case(cell, BATCH_SIZES[layout], reverse)
    assert gradgradcheck(apply, inputs, fast_mode=True)


def test_function_without_proj_takes_its_old_arguments():
    """w_hr is optional and last: the 8-argument call of before still works."""
    torch.manual_seed(6)
    apply, _, inputs = function_case("lstm", [2, 2], False)
    x, w_ih, bias, w_hh, _, _, _ = inputs
    h0 = torch.randn(2, HID, dtype=F64, requires_grad=True)
    c0 = torch.randn(2, HID, dtype=F64, requires_grad=True)
    w_hh = torch.randn(4 * HID, HID, dtype=F64, requires_grad=True)
    args = (x, w_ih, bias, w_hh, h0, c0)
    assert gradcheck(lambda *a: LSTMKernelFunction.apply(*a, [2, 2], False), args)
    assert gradgradcheck(
        lambda *a: LSTMKernelFunction.apply(*a, [2, 2], False), args, fast_mode=True
    )


@pytest.mark.parametrize("cls", [CustomLSTM, PeepholeLSTM])
def test_proj_module_gradgradcheck_with_lengths(cls):
    torch.manual_seed(7)
    module = cls(N_IN, HID, 2, batch_first=True, bidirectional=True, proj_size=PROJ)
    module = module.to(F64)
    names = [n for n, _ in module.named_parameters()]
    lengths = torch.tensor([2, 3, 1])

    def apply(x, h0, c0, *params):
        weights = dict(zip(names, params, strict=True))
        out, (h, c) = torch.func.functional_call(
            module, weights, (x, (h0, c0), lengths)
        )
        return out, h, c

    x = torch.randn(3, 3, N_IN, dtype=F64, requires_grad=True)
    h0 = torch.randn(4, 3, PROJ, dtype=F64, requires_grad=True)
    c0 = torch.randn(4, 3, HID, dtype=F64, requires_grad=True)
    params = [p.detach().clone().requires_grad_() for p in module.parameters()]
    assert gradgradcheck(apply, (x, h0, c0, *params), fast_mode=True)


# ------------------------------------------------------ TorchScript and export


@pytest.mark.parametrize("cls", [CustomLSTM, PeepholeLSTM])
def test_proj_torchscript_and_export_run_the_plain_steps(cls):
    torch.manual_seed(8)
    module = cls(N_IN, HID, 2, batch_first=True, bidirectional=True, proj_size=PROJ)
    module.eval()
    x = torch.randn(BATCH, STEPS, N_IN)
    scripted = torch.jit.script(module)
    with torch.no_grad():
        for args in ((x,), (x, None, LENGTHS), (x[0],)):
            expected = module(*args)
            got = scripted(*args)
            torch.testing.assert_close(got[0], expected[0], atol=1e-6, rtol=0)
            for a, b in zip(got[1], expected[1], strict=True):
                torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exported = torch.export.export(module, (x,))
    x2 = torch.randn(BATCH, STEPS, N_IN)
    with torch.no_grad():
        torch.testing.assert_close(
            exported.module()(x2)[0], module(x2)[0], atol=1e-6, rtol=0
        )


# ------------------------------------------------------------------- forget_bias


def torch_lstm_with_forget_bias(forget_bias, seed, *args, **kw):
    """torch's LSTM under `seed` with the forget slices set by hand."""
    torch.manual_seed(seed)
    lstm = nn.LSTM(*args, **kw)
    H = lstm.hidden_size
    with torch.no_grad():
        for name, p in lstm.named_parameters():
            if name.startswith("bias_ih"):
                p[H : 2 * H] = forget_bias
            elif name.startswith("bias_hh"):
                p[H : 2 * H] = 0.0
    return lstm


@pytest.mark.parametrize("proj_size", [0, PROJ])
@pytest.mark.parametrize("impl", ["custom", "auto", "torch"])
def test_forget_bias_is_torchs_lstm_with_the_slices_set(impl, proj_size):
    kw = dict(batch_first=True, bidirectional=True, proj_size=proj_size)
    theirs = torch_lstm_with_forget_bias(1.5, 11, N_IN, HID, 2, **kw)
    torch.manual_seed(11)
    ours = CustomLSTM(N_IN, HID, 2, impl=impl, forget_bias=1.5, **kw)
    expected = theirs.state_dict()
    assert list(ours.state_dict()) == list(expected)
    for name, p in ours.state_dict().items():
        assert torch.equal(p, expected[name]), name
    assert ours.bias_ih_l1_reverse[HID : 2 * HID].eq(1.5).all()
    x = torch.randn(BATCH, STEPS, N_IN)
    assert_same(run(ours, x, None, "lengths"), run(theirs, x, None, "packed"))
    # state dicts load both ways
    fresh = CustomLSTM(N_IN, HID, 2, forget_bias=1.5, **kw)
    fresh.load_state_dict(theirs.state_dict())
    assert_same(run(fresh, x, None, "padded"), run(theirs, x, None, "padded"))
    other = nn.LSTM(N_IN, HID, 2, **kw)
    other.load_state_dict(ours.state_dict())
    assert_same(run(other, x, None, "padded"), run(theirs, x, None, "padded"))


def test_peephole_forget_bias_draws_the_same_weights():
    kw = dict(batch_first=True, bidirectional=True, proj_size=PROJ)
    torch.manual_seed(12)
    plain = PeepholeLSTM(N_IN, HID, 2, **kw)
    torch.manual_seed(12)
    ours = PeepholeLSTM(N_IN, HID, 2, forget_bias=-0.5, **kw)
    theirs = torch_lstm_with_forget_bias(-0.5, 12, N_IN, HID, 2, **kw)
    for name, p in ours.state_dict().items():
        reference = theirs.state_dict().get(name, plain.state_dict()[name])
        assert torch.equal(p, reference), name  # the peepholes too: same RNG draws
    x = torch.randn(BATCH, STEPS, N_IN)
    out = ours(x)[0]
    with torch.no_grad():
        for name in ours._peephole_names:
            getattr(ours, name).zero_()
    torch.testing.assert_close(ours(x)[0], theirs(x)[0], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(out, theirs(x)[0])


def test_reset_parameters_keeps_the_forget_bias():
    ours = CustomLSTM(N_IN, HID, 1, forget_bias=2.0)
    ours.reset_parameters()
    assert ours.bias_ih_l0[HID : 2 * HID].eq(2.0).all()
    assert ours.bias_hh_l0[HID : 2 * HID].eq(0.0).all()
    assert not ours.bias_ih_l0[:HID].eq(2.0).all()
    assert "forget_bias=2.0" in repr(ours)


@pytest.mark.parametrize("cls", [CustomLSTM, PeepholeLSTM])
def test_forget_bias_is_checked(cls):
    with pytest.raises(ValueError, match="Expected bias=True with forget_bias"):
        cls(N_IN, HID, bias=False, forget_bias=1.0)
    for bad in (math.inf, math.nan, "1", True):
        with pytest.raises(ValueError, match="Expected forget_bias to be a finite"):
            cls(N_IN, HID, forget_bias=bad)
    with pytest.raises(TypeError):  # keyword-only, as impl
        cls(N_IN, HID, 1, True, False, 0.0, False, 0, None, None, "custom", 1.0)
    assert cls(N_IN, HID, forget_bias=1).bias_ih_l0[HID].item() == 1.0
