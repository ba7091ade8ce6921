"""LayerNormLSTM (issue 13, `norm layer`) against the contract's equations.

The reference is a plain loop written from language.md section 9, one sequence and
one step at a time, in float64 with torch.nn.functional.layer_norm: outputs, final
states and every gradient, for 1-3 layers, both directions, padded input, lengths
and PackedSequence, with and without peepholes and projections. Then gradcheck and
gradgradcheck of the hand-written backward, the plain (TorchScript) steps against
it, and the module's parameters, initialisation and impl rules.
"""

import inspect
import re
import warnings
from typing import Optional

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd import gradcheck, gradgradcheck

from rnnspec.nn import lnlstm
from rnnspec.nn.kernel import KernelStepWeight, kernel_onednn
from rnnspec.nn.lnlstm import LayerNormLSTM, LNLSTMKernelFunction, lnlstm_kernel_plain
from rnnspec.nn.lstm import CustomLSTM

F64 = torch.float64
N_IN, HID, PROJ, BATCH, STEPS = 3, 4, 2, 3, 5
LENGTHS = torch.tensor([4, 5, 1])  # unsorted, with 1 and T

#: The module needs the issue-13 stack (proj-aware state sizes) and CustomLSTM's
#: new keywords; until they are merged only the Function-level tests run.
needs_issue13_lstm = pytest.mark.skipif(
    "initial_state" not in inspect.signature(CustomLSTM.__init__).parameters,
    reason="needs CustomLSTM with proj/forget_bias/residual keywords (issue 13)",
)
needs_issue13_stack = pytest.mark.skipif(
    not hasattr(CustomLSTM, "_kernel_options"),
    reason="needs the stack's residual / initial_state (issue 13)",
)


# ---------------------------------------------------------------------------------
# The reference: the contract's equations, a step at a time
# ---------------------------------------------------------------------------------


def ln(v, gain, bias=None):
    """LN(v; γ, β) over the whole vector, biased variance, eps 1e-5."""
    return F.layer_norm(v, v.shape, gain, bias, 1e-5)


def reference_cell(m, layer, suffix, x_t, h, c):
    """One step of the layer-normalised LSTM of layer `layer` (language.md §9)."""

    def p(stem):
        return getattr(m, f"{stem}_l{layer}{suffix}")

    a = ln(p("weight_ih") @ x_t, p("weight_ln_ih")) + ln(
        p("weight_hh") @ h, p("weight_ln_hh")
    )
    if m.bias:
        a = a + p("bias_ih") + p("bias_hh")
    a_i, a_f, a_g, a_o = a.chunk(4)
    if m.peephole:
        p_i, p_f, p_o = p("weight_ch").chunk(3)
        a_i, a_f = a_i + p_i * c, a_f + p_f * c
    i, f, g = torch.sigmoid(a_i), torch.sigmoid(a_f), torch.tanh(a_g)
    c = f * c + i * g
    if m.peephole:
        a_o = a_o + p_o * c
    h = torch.sigmoid(a_o) * torch.tanh(ln(c, p("weight_ln_c"), p("bias_ln_c")))
    if m.proj_size > 0:
        h = p("weight_hr") @ h
    return h, c


def reference(m, x, h0, c0, lengths):
    """(B, T, D*width) outputs, zero past each length, and final (h, c); batch_first.

    With `residual`, layer k >= 1 adds its input to its output; h0/c0 None: the
    module's learned initial states."""
    batch, steps, _ = x.shape
    if h0 is None:
        h0 = m.h0.unsqueeze(1).expand(-1, batch, -1)
        c0 = m.c0.unsqueeze(1).expand(-1, batch, -1)
    residual = getattr(m, "residual", False)
    directions = 2 if m.bidirectional else 1
    h_n = [[None] * batch for _ in range(m.num_layers * directions)]
    c_n = [[None] * batch for _ in range(m.num_layers * directions)]
    outputs = []
    for b in range(batch):
        n = int(lengths[b])
        layer_in = [x[b, t] for t in range(n)]
        for layer in range(m.num_layers):
            per_direction = []
            for d in range(directions):
                k = layer * directions + d
                h, c = h0[k, b], c0[k, b]
                outs = [None] * n
                for t in reversed(range(n)) if d else range(n):
                    suffix = "_reverse" if d else ""
                    h, c = reference_cell(m, layer, suffix, layer_in[t], h, c)
                    outs[t] = h
                h_n[k][b], c_n[k][b] = h, c
                per_direction.append(outs)
            outs = [torch.cat([o[t] for o in per_direction]) for t in range(n)]
            if residual and layer > 0:
                outs = [o + i for o, i in zip(outs, layer_in, strict=True)]
            layer_in = outs
        rows = torch.stack(layer_in)
        outputs.append(torch.cat([rows, rows.new_zeros(steps - n, rows.shape[1])]))
    stack2 = lambda s: torch.stack([torch.stack(row) for row in s])  # noqa: E731
    return torch.stack(outputs), (stack2(h_n), stack2(c_n))


# ---------------------------------------------------------------------------------
# Comparing the module with the reference
# ---------------------------------------------------------------------------------


def make_module(layers=2, bidirectional=True, peephole=True, proj=PROJ, **kw):
    """A float64 LayerNormLSTM whose norms and peepholes are far from their init."""
    m = LayerNormLSTM(
        N_IN,
        HID,
        layers,
        batch_first=True,
        bidirectional=bidirectional,
        proj_size=proj,
        peephole=peephole,
        **kw,
    ).to(F64)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if "_ln_" in name or "weight_ch" in name:
                p.copy_(torch.randn_like(p))
    return m


def states(m, batch=BATCH):
    rows = m.num_layers * (2 if m.bidirectional else 1)
    h0 = torch.randn(rows, batch, m.proj_size or m.hidden_size, dtype=F64)
    return h0, torch.randn(rows, batch, m.hidden_size, dtype=F64)


def run(m, x, state, mode, fn=None):
    """Outputs, final states and the gradients of a fixed random linear loss.

    mode: "padded" (no lengths), "lengths" (LENGTHS) or "packed" (a PackedSequence
    of LENGTHS); `fn(x, state)` replaces the module's forward (the reference).
    """
    m.zero_grad(set_to_none=True)
    x = x.clone().requires_grad_()
    state = tuple(s.clone().requires_grad_() for s in state)
    lengths = LENGTHS if mode != "padded" else torch.full((x.shape[0],), x.shape[1])
    if fn is not None:
        out, final = fn(x, state, lengths)
    elif mode == "padded":
        out, final = m(x, state)
    elif mode == "lengths":
        out, final = m(x, state, LENGTHS)
    else:
        packed = nn.utils.rnn.pack_padded_sequence(
            x, LENGTHS, batch_first=True, enforce_sorted=False
        )
        out, final = m(packed, state)
        out, _ = nn.utils.rnn.pad_packed_sequence(
            out, batch_first=True, total_length=x.shape[1]
        )
    gen = torch.Generator().manual_seed(7)
    loss = (out * torch.randn(out.shape, generator=gen, dtype=F64)).sum()
    for s in final:
        loss = loss + (s * torch.randn(s.shape, generator=gen, dtype=F64)).sum()
    loss.backward()
    grads = {"x": x.grad, "state h": state[0].grad, "state c": state[1].grad}
    for name, p in m.named_parameters():
        grads[name] = p.grad
    return out.detach(), [s.detach() for s in final], grads


def assert_same(got, expected, tol=1e-10):
    out_a, final_a, grads_a = got
    out_b, final_b, grads_b = expected
    torch.testing.assert_close(out_a, out_b, atol=tol, rtol=tol)
    for a, b in zip(final_a, final_b, strict=True):
        torch.testing.assert_close(a, b, atol=tol, rtol=tol)
    assert sorted(grads_a) == sorted(grads_b)
    for name in grads_b:
        assert grads_a[name] is not None and grads_b[name] is not None, name
        torch.testing.assert_close(
            grads_a[name], grads_b[name], atol=tol, rtol=tol, msg=name
        )


def reference_fn(m):
    return lambda x, state, lengths: reference(m, x, state[0], state[1], lengths)


@needs_issue13_lstm
@pytest.mark.parametrize("proj", [0, PROJ], ids=["no_proj", "proj"])
@pytest.mark.parametrize("peephole", [False, True], ids=["", "peephole"])
@pytest.mark.parametrize(
    "layers, bidirectional", [(1, False), (1, True), (2, True), (3, False)]
)
def test_matches_the_equations(layers, bidirectional, peephole, proj):
    torch.manual_seed(0)
    m = make_module(layers, bidirectional, peephole, proj)
    x, state = torch.randn(BATCH, STEPS, N_IN, dtype=F64), states(m)
    for mode in ("padded", "lengths", "packed"):
        expected = run(m, x, state, mode, reference_fn(m))
        assert_same(run(m, x, state, mode), expected)


@needs_issue13_lstm
def test_no_bias_and_time_major_match_the_equations():
    torch.manual_seed(1)
    m = make_module(3, True, True, PROJ, bias=False)
    x, state = torch.randn(BATCH, STEPS, N_IN, dtype=F64), states(m)
    assert_same(
        run(m, x, state, "lengths"), run(m, x, state, "lengths", reference_fn(m))
    )
    time_major = make_module(2, True, True, 0)
    time_major.batch_first = False
    x, state = torch.randn(BATCH, STEPS, N_IN, dtype=F64), states(time_major)

    def transposed(x, state, lengths):  # the module, seen batch-first
        out, final = time_major(x.transpose(0, 1), state, lengths)
        return out.transpose(0, 1), final

    got = run(time_major, x, state, "lengths", transposed)
    time_major.batch_first = True
    assert_same(got, run(time_major, x, state, "lengths", reference_fn(time_major)))


@needs_issue13_lstm
@needs_issue13_stack
def test_residual_and_learned_state_match_the_equations():
    """Every option at once: norm, proj, peephole, residual, learned initial
    state, 3 layers, both directions; with lengths and without."""
    torch.manual_seed(10)
    m = make_module(3, True, True, PROJ, residual=True, initial_state="learned")
    with torch.no_grad():
        m.h0.normal_(), m.c0.normal_()
    x = torch.randn(BATCH, STEPS, N_IN, dtype=F64)
    names, params = zip(*m.named_parameters())
    for lengths in (LENGTHS, None):
        full = torch.full((BATCH,), STEPS) if lengths is None else lengths
        results = []
        for out, (h, c) in (m(x, None, lengths), reference(m, x, None, None, full)):
            gen = torch.Generator().manual_seed(3)
            loss = sum(
                (t * torch.randn(t.shape, generator=gen, dtype=F64)).sum()
                for t in (out, h, c)
            )
            results.append([out, h, c, *torch.autograd.grad(loss, params)])
        for a, b in zip(*results, strict=True):
            torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)
        for name in ("h0", "c0"):  # the learned states get gradients
            assert results[0][3 + names.index(name)].abs().sum() > 0


@needs_issue13_lstm
def test_zero_states_and_unbatched_input():
    torch.manual_seed(2)
    m = make_module()
    x = torch.randn(BATCH, STEPS, N_IN, dtype=F64)
    zeros = tuple(torch.zeros_like(s) for s in states(m))
    out, (h, c) = m(x, None, LENGTHS)
    expected, (h_e, c_e) = reference(m, x, zeros[0], zeros[1], LENGTHS)
    torch.testing.assert_close(out, expected, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(h, h_e, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(c, c_e, atol=1e-10, rtol=1e-10)
    assert h.shape == (4, BATCH, PROJ) and c.shape == (4, BATCH, HID)
    one, (h1, c1) = m(x[1])  # unbatched (T, N): a batch of one
    torch.testing.assert_close(one, out[1], atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(h1, h[:, 1], atol=1e-10, rtol=1e-10)
    empty, (h0, _) = m(x[:0], None, LENGTHS[:0])  # an empty batch runs the plain steps
    assert empty.shape == (0, STEPS, 2 * PROJ) and h0.shape == (4, 0, PROJ)


@needs_issue13_lstm
def test_the_norms_and_peepholes_matter():
    """Each kind of parameter changes the output (the reference could ignore none)."""
    torch.manual_seed(3)
    m = make_module()
    x = torch.randn(BATCH, STEPS, N_IN, dtype=F64)
    before = m(x)[0]
    for stem in (
        "weight_ln_ih",
        "weight_ln_hh",
        "weight_ln_c",
        "bias_ln_c",
        "weight_ch",
    ):
        with torch.no_grad():
            saved = getattr(m, f"{stem}_l0").clone()
            getattr(m, f"{stem}_l0").mul_(1.5)
            changed = m(x)[0]
            getattr(m, f"{stem}_l0").copy_(saved)
        assert (changed - before).abs().max() > 1e-4, stem


# ---------------------------------------------------------------------------------
# The autograd.Function: hand-written backward, plain steps, double backward
# ---------------------------------------------------------------------------------


def function_inputs(batch_sizes, peephole, proj, bias=True, seed=11, hidden=3):
    """Tensor inputs of LNLSTMKernelFunction: x, w_ih, bias, w_hh, the four norms,
    peep, w_hr, h0, c0 (None where absent)."""
    gen = torch.Generator().manual_seed(seed)
    H, n_in = hidden, 2
    width = H - 1 if proj else H

    def rand(*shape):
        return torch.randn(*shape, generator=gen, dtype=F64).requires_grad_()

    rows, batch = sum(batch_sizes), batch_sizes[0]
    return [
        rand(rows, n_in),
        rand(4 * H, n_in),
        rand(4 * H) if bias else None,
        rand(4 * H, width),
        rand(4 * H),
        rand(4 * H),
        rand(H),
        rand(H),
        rand(3 * H) if peephole else None,
        rand(width, H) if proj else None,
        rand(batch, width),
        rand(batch, H),
    ]


def tensors_only(inputs, fn):
    """fn over the non-None inputs, for gradcheck (which takes tensors only)."""
    present = [t for t in inputs if t is not None]

    def call(*tensors):
        it = iter(tensors)
        return fn(*[next(it) if t is not None else None for t in inputs])

    return call, present


FUNCTION_CASES = [
    (batch_sizes, reverse, peephole, proj)
    for batch_sizes in ([3, 3, 3], [4, 3, 3, 1])
    for reverse in (False, True)
    for peephole in (False, True)
    for proj in (False, True)
] + [  # 45 steps: the backward's spans (a sixteenth of the rows) hold several
    ([3] * 20 + [2] * 15 + [1] * 10, reverse, both, both)
    for reverse in (False, True)
    for both in (False, True)
]


@pytest.mark.parametrize("batch_sizes, reverse, peephole, proj", FUNCTION_CASES)
def test_function_gradcheck_and_plain_steps(batch_sizes, reverse, peephole, proj):
    """The hand-written backward passes gradcheck; the plain steps (TorchScript,
    compile, export) give the same numbers, forward and backward."""
    inputs = function_inputs(batch_sizes, peephole, proj)
    extra = (batch_sizes, reverse)
    apply, tensors = tensors_only(
        inputs, lambda *a: LNLSTMKernelFunction.apply(*a, *extra)
    )
    plain, _ = tensors_only(inputs, lambda *a: lnlstm_kernel_plain(*a, *extra))
    assert gradcheck(apply, tensors)
    got, expected = apply(*tensors), plain(*tensors)
    gen = torch.Generator().manual_seed(0)
    weights = [torch.randn(t.shape, generator=gen, dtype=F64) for t in got]
    grads = []
    for outs in (got, expected):
        loss = sum((o * w).sum() for o, w in zip(outs, weights))
        grads.append(torch.autograd.grad(loss, tensors))
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-12)
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)


def test_function_without_bias_gradcheck():
    inputs = function_inputs([3, 2, 2, 1], True, True, bias=False)
    apply, tensors = tensors_only(
        inputs, lambda *a: LNLSTMKernelFunction.apply(*a, [3, 2, 2, 1], True)
    )
    assert gradcheck(apply, tensors)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("peephole, proj", [(False, False), (True, True)])
def test_function_gradgradcheck(peephole, proj, reverse):
    """create_graph=True differentiates the plain steps: double backward is exact."""
    batch_sizes = [3, 2, 2, 1]
    inputs = function_inputs(batch_sizes, peephole, proj)
    apply, tensors = tensors_only(
        inputs, lambda *a: LNLSTMKernelFunction.apply(*a, batch_sizes, reverse)
    )
    outputs = apply(*tensors)
    loss = sum((o * torch.randn_like(o)).sum() for o in outputs)
    with_graph = torch.autograd.grad(loss, tensors, create_graph=True)
    plain = torch.autograd.grad(loss, tensors)
    for g, e in zip(with_graph, plain, strict=True):
        assert g.requires_grad
        torch.testing.assert_close(g, e)
    assert gradgradcheck(apply, tensors)


@pytest.mark.parametrize("reverse", [False, True])
def test_float32_onednn_matmuls_match_torch_matmuls(reverse):
    """In float32 on CPU the Function multiplies on oneDNN (kernel_onednn): the
    same numbers, to float32 rounding, as the plain steps on torch.mm, and as the
    Function with oneDNN switched off."""
    batch_sizes = [16, 16, 12, 3]  # steps of 16 × 512 × 127 multiply-adds
    inputs = [
        None if t is None else t.detach().float().requires_grad_()
        for t in function_inputs(batch_sizes, True, True, hidden=128)
    ]
    tensors = [t for t in inputs if t is not None]
    w_hh = inputs[3]
    onednn = KernelStepWeight(w_hh, batch_sizes[0], len(batch_sizes)).onednn
    assert onednn == kernel_onednn(w_hh) == torch.backends.mkldnn.is_available()
    gen = torch.Generator().manual_seed(1)

    def outputs_and_grads(fn):
        outs = fn(*inputs, batch_sizes, reverse)
        weights = [torch.randn(o.shape, generator=gen) for o in outs]
        loss = sum((o * w).sum() for o, w in zip(outs, weights))
        return [o.detach() for o in outs] + list(torch.autograd.grad(loss, tensors))

    expected = outputs_and_grads(lnlstm_kernel_plain)
    gen.manual_seed(1)
    got = outputs_and_grads(LNLSTMKernelFunction.apply)
    with torch.backends.mkldnn.flags(enabled=False):
        assert not KernelStepWeight(w_hh, batch_sizes[0], len(batch_sizes)).onednn
        gen.manual_seed(1)
        without = outputs_and_grads(LNLSTMKernelFunction.apply)
    for a, b, c in zip(got, expected, without, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(c, b, atol=1e-5, rtol=1e-4)


def test_first_order_backward_does_no_recomputation(monkeypatch):
    """The ordinary backward is the hand-written one: no second forward."""

    def forbidden(*args):
        raise AssertionError("recomputed the forward without create_graph")

    monkeypatch.setattr(lnlstm, "kernel_recompute_grads", forbidden)
    inputs = function_inputs([3, 3, 1], True, True)
    apply, tensors = tensors_only(
        inputs, lambda *a: LNLSTMKernelFunction.apply(*a, [3, 3, 1], False)
    )
    out, h, c = apply(*tensors)
    (out.sum() + h.sum() + c.sum()).backward()
    assert all(t.grad is not None for t in tensors)


# ---------------------------------------------------------------------------------
# The module: gradcheck, gradgradcheck, eager runs the Function, TorchScript
# ---------------------------------------------------------------------------------


def module_function(m, lengths):
    """(x, h0, c0, *parameters) -> output and final states, via functional_call."""
    names = [n for n, _ in m.named_parameters()]

    def call(x, h0, c0, *params):
        weights = dict(zip(names, params, strict=True))
        out, (h, c) = torch.func.functional_call(m, weights, (x, (h0, c0), lengths))
        return out, h, c

    return call


def module_inputs(m):
    x = torch.randn(BATCH, 3, 2, dtype=F64, requires_grad=True)
    h0, c0 = (s.requires_grad_() for s in states(m))
    params = [p.detach().clone().requires_grad_() for p in m.parameters()]
    return (x, h0, c0, *params)


@needs_issue13_lstm
@pytest.mark.parametrize("packed", [False, True], ids=["padded", "lengths"])
def test_module_gradcheck_and_gradgradcheck(packed):
    torch.manual_seed(4)
    lengths = torch.tensor([2, 3, 1]) if packed else None
    for m in (
        LayerNormLSTM(2, 2, 2, batch_first=True, bidirectional=True, peephole=True),
        LayerNormLSTM(2, 3, 2, batch_first=True, proj_size=1, peephole=True),
    ):
        m = m.to(F64)
        fn, inputs = module_function(m, lengths), module_inputs(m)
        assert gradcheck(fn, inputs)
        assert gradgradcheck(fn, inputs, fast_mode=True)


@needs_issue13_lstm
def test_eager_runs_the_hand_written_backward():
    m = make_module()
    out, _ = m(torch.randn(2, 3, N_IN, dtype=F64), None, torch.tensor([3, 1]))
    seen, stack = set(), [out.grad_fn]
    while stack:
        fn = stack.pop()
        if fn is not None and fn not in seen:
            seen.add(fn)
            stack.extend(f for f, _ in fn.next_functions)
    assert "LNLSTMKernelFunctionBackward" in {type(fn).__name__ for fn in seen}


class _Tagger(nn.Module):
    """A small model around the recurrent module, as the generated models are."""

    def __init__(self, rnn, width):
        super().__init__()
        self.rnn = rnn
        self.head = nn.Linear(width, 3)

    def forward(self, x, lengths: Optional[torch.Tensor] = None):
        out, _ = self.rnn(x, None, lengths)
        return self.head(out)


@needs_issue13_lstm
@pytest.mark.parametrize("peephole, proj", [(False, 0), (True, PROJ)])
def test_torchscript_equals_eager(peephole, proj):
    """Scripted, the plain steps run: same outputs and, trained, same gradients."""
    torch.manual_seed(5)
    rnn = make_module(2, True, peephole, proj)
    model = _Tagger(rnn, 2 * (proj or HID)).to(F64)
    scripted = torch.jit.script(model)
    x, lengths = torch.randn(BATCH, STEPS, N_IN, dtype=F64), LENGTHS
    for args in ((x,), (x, lengths)):
        torch.testing.assert_close(scripted(*args), model(*args), atol=1e-12, rtol=0)
        params = list(model.parameters())
        expected = torch.autograd.grad(model(*args).sum(), params)
        got = torch.autograd.grad(scripted(*args).sum(), params)
        for g, e in zip(got, expected, strict=True):
            torch.testing.assert_close(g, e, atol=1e-10, rtol=1e-10)
    time_major = LayerNormLSTM(N_IN, HID, 2, proj_size=proj, peephole=peephole)
    state = (torch.randn(2, BATCH, proj or HID), torch.randn(2, BATCH, HID))
    xt = torch.randn(STEPS, BATCH, N_IN)
    with torch.no_grad():
        got, expected = torch.jit.script(time_major)(xt, state), time_major(xt, state)
    torch.testing.assert_close(got[0], expected[0], atol=1e-6, rtol=0)
    for a, b in zip(got[1], expected[1], strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)


@needs_issue13_lstm
def test_export_runs_the_plain_steps():
    torch.manual_seed(6)
    model = _Tagger(make_module(2, True, True, PROJ), 2 * PROJ).to(F64).eval()
    x = torch.randn(BATCH, STEPS, N_IN, dtype=F64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exported = torch.export.export(model, (x,))
    x2 = torch.randn(BATCH, STEPS, N_IN, dtype=F64)
    with torch.no_grad():
        torch.testing.assert_close(exported.module()(x2), model(x2), atol=1e-12, rtol=0)


@needs_issue13_lstm
def test_torch_compile_equals_eager():
    """Unpadded input through torch.compile (opt-in) runs the plain steps."""
    torch.manual_seed(7)
    m = make_module(1, True, True, PROJ)
    x = torch.randn(BATCH, 4, N_IN, dtype=F64)
    weights = [torch.randn(BATCH, 4, 2 * PROJ, dtype=F64)]
    weights += [torch.randn(2, BATCH, PROJ, dtype=F64)]
    weights += [torch.randn(2, BATCH, HID, dtype=F64)]

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
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)


# ---------------------------------------------------------------------------------
# Parameters, initialisation, impl
# ---------------------------------------------------------------------------------


@needs_issue13_lstm
@pytest.mark.parametrize("proj", [0, PROJ])
def test_same_seed_same_weights_as_torch_then_ones_and_zeros(proj):
    torch.manual_seed(8)
    m = LayerNormLSTM(N_IN, HID, 2, bidirectional=True, proj_size=proj, peephole=True)
    after = torch.rand(1)
    torch.manual_seed(8)
    lstm = nn.LSTM(N_IN, HID, 2, bidirectional=True, proj_size=proj)
    assert torch.equal(torch.rand(1), after)  # no random draws of our own
    ours, theirs = m.state_dict(), lstm.state_dict()
    for name in theirs:
        assert torch.equal(ours[name], theirs[name]), name
    stems = ("weight_ln_ih", "weight_ln_hh", "weight_ln_c", "bias_ln_c", "weight_ch")
    extra = [
        f"{stem}_l{k}{s}" for k in range(2) for s in ("", "_reverse") for stem in stems
    ]
    assert list(ours) == list(theirs) + extra
    sizes = {"weight_ln_ih": 4 * HID, "weight_ln_hh": 4 * HID, "weight_ch": 3 * HID}
    for name in extra:
        stem = re.sub(r"_l\d(_reverse)?$", "", name)
        value, one = ours[name], stem.startswith("weight_ln")
        assert value.shape == (sizes.get(stem, HID),), name
        assert torch.equal(value, torch.full_like(value, 1.0 if one else 0.0)), name


@needs_issue13_lstm
def test_impl_and_options():
    with pytest.raises(ValueError, match="impl"):
        LayerNormLSTM(N_IN, HID, impl="torch")  # torch has no layer-norm LSTM
    with pytest.raises(ValueError, match="peephole"):
        LayerNormLSTM(N_IN, HID, peephole="yes")
    m = LayerNormLSTM(N_IN, HID, impl="auto", peephole=True, batch_first=True)
    assert "impl='auto'" in repr(m) and "peephole=True" in repr(m)
    assert "peephole" not in repr(LayerNormLSTM(N_IN, HID))
    x = torch.randn(2, 3, N_IN)
    assert not m._kernel_defers_to_torch(x, None)  # auto: always ours
    custom = LayerNormLSTM(N_IN, HID, impl="custom", peephole=True, batch_first=True)
    custom.load_state_dict(m.state_dict())
    assert torch.equal(custom(x)[0], m(x)[0])


@needs_issue13_lstm
def test_state_dict_without_peepholes_loads_as_zero_peepholes():
    torch.manual_seed(9)
    plain = make_module(2, True, peephole=False)
    m = make_module(2, True, peephole=True)
    result = m.load_state_dict(plain.state_dict())  # strict
    assert not result.missing_keys and not result.unexpected_keys
    for name, p in m.named_parameters():
        if "weight_ch" in name:
            assert torch.all(p == 0), name
    x = torch.randn(BATCH, STEPS, N_IN, dtype=F64)
    torch.testing.assert_close(m(x, None, LENGTHS)[0], plain(x, None, LENGTHS)[0])
    sd = plain.state_dict()
    del sd["weight_ln_c_l1"]
    with pytest.raises(RuntimeError, match="weight_ln_c_l1"):
        m.load_state_dict(sd)


@needs_issue13_lstm
def test_follows_dtype_and_reassigned_parameters():
    m = LayerNormLSTM(N_IN, HID, batch_first=True, peephole=True).double()
    x = torch.randn(2, 3, N_IN, dtype=F64)
    before = m(x)[0]
    assert before.dtype == F64
    m.bias_ln_c_l0 = nn.Parameter(torch.ones(HID, dtype=F64))
    assert not torch.allclose(before, m(x)[0])
