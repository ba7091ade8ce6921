"""LayerNormGRU (`norm layer` GRU, language.md section 9) against a plain step-by-step
loop written here from the contract's equations, in float64; autograd's numerical
gradients (first and second order); torch's init; TorchScript, export and compile."""

import inspect
import warnings
from typing import Dict, List, Optional

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd import gradcheck, gradgradcheck

from rnnspec.nn import CustomGRU, LayerNormGRU
from rnnspec.nn import lngru as lngru_module
from rnnspec.nn.lngru import (
    LayerNormGRUKernelFunction,
    lngru_kernel_plain,
    lngru_project,
)

F64 = torch.float64
N_IN, HID, BATCH, STEPS = 3, 4, 3, 5
LENGTHS = torch.tensor([3, 5, 1])  # unsorted on purpose


# ---------------------------------------------------------------------------------
# The reference: the contract's equations, one step at a time
# ---------------------------------------------------------------------------------


def ln(v: Tensor, gain: Tensor) -> Tensor:
    """LN(v; γ) = γ ⊙ (v - mean(v)) / sqrt(var(v) + 1e-5), biased variance."""
    return F.layer_norm(v, (v.shape[-1],), gain, None, 1e-5)


def reference_step(x, h, p: Dict[str, Tensor], k: str) -> Tensor:
    """h_t from x_t and h_{t-1} for layer-direction suffix k (e.g. "l1_reverse")."""
    a = ln(x @ p[f"weight_ih_{k}"].t(), p[f"weight_ln_ih_{k}"])
    b = ln(h @ p[f"weight_hh_{k}"].t(), p[f"weight_ln_hh_{k}"])
    if f"bias_ih_{k}" in p:
        a = a + p[f"bias_ih_{k}"]
        b = b + p[f"bias_hh_{k}"]
    a_r, a_z, a_n = a.chunk(3, -1)
    b_r, b_z, b_n = b.chunk(3, -1)
    r = torch.sigmoid(a_r + b_r)
    z = torch.sigmoid(a_z + b_z)
    n = torch.tanh(a_n + r * b_n)
    return (1 - z) * n + z * h


def reference(p, x, h0, lengths, layers, directions, residual=False):
    """(B, T, D*H) outputs (zero past each length) and (L*D, B, H) final states of
    a batch-first input; sequence b has lengths[b] steps. With `residual`, layer
    k >= 1 outputs its own output plus its input; the states stay its own."""
    steps = x.shape[1]
    finals: List[Tensor] = []
    for layer in range(layers):
        outs = []
        for d in range(directions):
            k = f"l{layer}" + ("_reverse" if d else "")
            h = h0[layer * directions + d]
            out: List[Optional[Tensor]] = [None] * steps
            order = range(steps - 1, -1, -1) if d else range(steps)
            for t in order:
                live = (t < lengths).unsqueeze(1)  # (B, 1): step t is in sequence b
                h = torch.where(live, reference_step(x[:, t], h, p, k), h)
                out[t] = torch.where(live, h, torch.zeros_like(h))
            outs.append(torch.stack(out, 1))
            finals.append(h)
        x = torch.cat(outs, 2) + x if residual and layer > 0 else torch.cat(outs, 2)
    return x, torch.stack(finals)


# ---------------------------------------------------------------------------------
# Running the module and the reference alike
# ---------------------------------------------------------------------------------


def make_module(layers=1, bidirectional=False, bias=True, batch_first=True, **kw):
    """A float64 LayerNormGRU whose gains are not ones (so that they count)."""
    m = LayerNormGRU(
        N_IN,
        HID,
        layers,
        bias=bias,
        batch_first=batch_first,
        bidirectional=bidirectional,
        **kw,
    ).to(F64)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if name.startswith("weight_ln_"):
                p.uniform_(0.5, 1.5)
    return m


def loss_of(out: Tensor, h: Tensor) -> Tensor:
    """A fixed random linear function of outputs and final state (the same weights
    in any dtype)."""
    gen = torch.Generator().manual_seed(7)
    w_out = torch.randn(out.shape, generator=gen, dtype=F64).to(out.dtype)
    w_h = torch.randn(h.shape, generator=gen, dtype=F64).to(h.dtype)
    return (out * w_out).sum() + (h * w_h).sum()


def run_module(m, x, h0, form, call=None):
    """Outputs (batch-first, padded), final state and gradients of x, h0 and every
    parameter; form is "full" (no lengths), "lengths" or "packed"; h0 None: no
    state given. `call` runs m (scripted, compiled) when given."""
    call = m if call is None else call
    m.zero_grad(set_to_none=True)
    x = x.clone().requires_grad_()
    h0 = None if h0 is None else h0.clone().requires_grad_()
    xin = x if m.batch_first else x.transpose(0, 1)
    if form == "packed":
        packed = nn.utils.rnn.pack_padded_sequence(
            xin, LENGTHS, batch_first=m.batch_first, enforce_sorted=False
        )
        out, h = call(packed, h0)
        out, _ = nn.utils.rnn.pad_packed_sequence(
            out, batch_first=m.batch_first, total_length=STEPS
        )
    else:
        out, h = call(xin, h0, LENGTHS if form == "lengths" else None)
    out = out if m.batch_first else out.transpose(0, 1)
    loss_of(out, h).backward()
    grads = {"x": x.grad, "state": None if h0 is None else h0.grad}
    grads.update({n: p.grad.clone() for n, p in m.named_parameters()})
    return out.detach(), h.detach(), grads


def run_reference(m, x, h0, form):
    """As run_module, from the equations; h0 None: the learned state `m.h0`."""
    params = {n: p.detach().clone().requires_grad_() for n, p in m.named_parameters()}
    x = x.clone().requires_grad_()
    if h0 is None:
        state = params["h0"].unsqueeze(1).expand(-1, BATCH, -1)
    else:
        h0 = state = h0.clone().requires_grad_()
    lengths = torch.full((BATCH,), STEPS) if form == "full" else LENGTHS
    directions = 2 if m.bidirectional else 1
    residual = getattr(m, "residual", False)
    out, h = reference(params, x, state, lengths, m.num_layers, directions, residual)
    loss_of(out, h).backward()
    grads = {"x": x.grad, "state": None if h0 is None else h0.grad}
    grads.update({n: p.grad for n, p in params.items()})
    return out.detach(), h.detach(), grads


def assert_same(got, expected, atol=1e-10):
    torch.testing.assert_close(got[0], expected[0], atol=atol, rtol=1e-8)
    torch.testing.assert_close(got[1], expected[1], atol=atol, rtol=1e-8)
    assert set(got[2]) == set(expected[2])
    for name, g in expected[2].items():
        if g is None:
            assert got[2][name] is None, name
            continue
        torch.testing.assert_close(got[2][name], g, atol=atol, rtol=1e-8, msg=name)


def inputs(m):
    directions = 2 if m.bidirectional else 1
    x = torch.randn(BATCH, STEPS, N_IN, dtype=F64)
    h0 = torch.randn(m.num_layers * directions, BATCH, HID, dtype=F64)
    return x, h0


# ---------------------------------------------------------------------------------
# Against the reference
# ---------------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["full", "lengths", "packed"])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("layers", [1, 2, 3])
def test_matches_the_equations(layers, bidirectional, form):
    torch.manual_seed(layers)
    m = make_module(layers, bidirectional)
    x, h0 = inputs(m)
    assert_same(run_module(m, x, h0, form), run_reference(m, x, h0, form))


@pytest.mark.parametrize("form", ["full", "packed"])
def test_matches_the_equations_without_bias_and_time_major(form):
    torch.manual_seed(3)
    m = make_module(2, True, bias=False, batch_first=False)
    assert not any(n.startswith("bias") for n, _ in m.named_parameters())
    x, h0 = inputs(m)
    assert_same(run_module(m, x, h0, form), run_reference(m, x, h0, form))


def test_impl_auto_runs_our_kernel_and_matches_the_equations():
    torch.manual_seed(4)
    m = make_module(2, True, impl="auto")
    x, h0 = inputs(m)
    assert_same(run_module(m, x, h0, "full"), run_reference(m, x, h0, "full"))


def test_layer_norm_changes_the_gru():
    """With gains of 1 the cell is still not torch's GRU: the norm acts."""
    torch.manual_seed(5)
    ours = LayerNormGRU(N_IN, HID, batch_first=True)
    theirs = nn.GRU(N_IN, HID, batch_first=True)
    theirs.load_state_dict(ours.state_dict(), strict=False)
    x = torch.randn(BATCH, STEPS, N_IN)
    assert not torch.allclose(ours(x)[0], theirs(x)[0], atol=1e-3)


def test_float32_matches_float64_reference():
    torch.manual_seed(6)
    m = make_module(2, True)
    x, h0 = inputs(m)
    expected = run_reference(m, x, h0, "lengths")
    got = run_module(m.float(), x.float(), h0.float(), "lengths")
    torch.testing.assert_close(got[0].double(), expected[0], atol=1e-5, rtol=1e-4)
    for name, g in expected[2].items():
        torch.testing.assert_close(
            got[2][name].double(), g, atol=1e-4, rtol=1e-4, msg=name
        )


# The stack's options (o-stack, issue 13): LayerNormGRU takes CustomGRU's keywords
STACK_OPTIONS = "residual" in inspect.signature(CustomGRU.__init__).parameters
needs_stack_options = pytest.mark.skipif(
    not STACK_OPTIONS, reason="CustomGRU takes no residual/initial_state yet"
)


@needs_stack_options
@pytest.mark.parametrize("form", ["full", "lengths", "packed"])
def test_residual_matches_the_equations(form):
    torch.manual_seed(7)
    m = make_module(3, True, residual=True)  # layers 1 and 2 add their input
    x, h0 = inputs(m)
    assert_same(run_module(m, x, h0, form), run_reference(m, x, h0, form))


@needs_stack_options
@pytest.mark.parametrize("form", ["full", "lengths", "packed"])
def test_learned_initial_state_matches_the_equations(form):
    torch.manual_seed(8)
    m = make_module(2, True, initial_state="learned")
    with torch.no_grad():
        m.h0.normal_()
    x, _ = inputs(m)
    got, expected = run_module(m, x, None, form), run_reference(m, x, None, form)
    assert_same(got, expected)
    assert got[2]["h0"].abs().sum() > 0


# ---------------------------------------------------------------------------------
# Parameters: torch's, then the gains
# ---------------------------------------------------------------------------------


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("layers, bidirectional", [(1, False), (3, True)])
def test_torch_parameters_are_nn_grus_under_the_same_seed(layers, bidirectional, bias):
    kw = dict(num_layers=layers, bias=bias, bidirectional=bidirectional)
    torch.manual_seed(11)
    ours = LayerNormGRU(N_IN, HID, **kw)
    after_ours = torch.rand(1)
    torch.manual_seed(11)
    theirs = nn.GRU(N_IN, HID, **kw)
    after_theirs = torch.rand(1)
    assert torch.equal(after_ours, after_theirs)  # the gains draw nothing
    torch_names = [n for n, _ in theirs.named_parameters()]
    suffixes = ["", "_reverse"] if bidirectional else [""]
    gain_names = [
        f"weight_ln_{side}_l{k}{s}"
        for k in range(layers)
        for s in suffixes
        for side in ("ih", "hh")
    ]
    assert [n for n, _ in ours.named_parameters()] == torch_names + gain_names
    for name, p in theirs.named_parameters():
        assert torch.equal(getattr(ours, name), p), name
    for name in gain_names:
        gain = getattr(ours, name)
        assert torch.equal(gain, torch.ones(3 * HID)), name


def test_impl_values():
    assert LayerNormGRU(N_IN, HID).impl == "custom"
    assert LayerNormGRU(N_IN, HID, impl="auto").impl == "auto"
    with pytest.raises(ValueError, match="impl must be one of .*got 'torch'"):
        LayerNormGRU(N_IN, HID, impl="torch")


def test_state_dict_round_trip_and_strictness():
    torch.manual_seed(12)
    a, b = make_module(2, True), make_module(2, True)
    b.load_state_dict(a.state_dict())
    x, h0 = inputs(a)
    torch.testing.assert_close(b(x, h0)[0], a(x, h0)[0], atol=0, rtol=0)
    plain = nn.GRU(N_IN, HID, 2, bidirectional=True).to(F64)
    with pytest.raises(RuntimeError, match="weight_ln_ih_l0"):
        b.load_state_dict(plain.state_dict())  # a GRU's weights lack the gains


def test_gains_follow_dtype_and_reassignment():
    m = LayerNormGRU(N_IN, HID, batch_first=True).double()
    x = torch.randn(2, STEPS, N_IN, dtype=F64)
    assert m(x)[0].dtype == F64
    before = m(x)[0]
    m.weight_ln_hh_l0 = nn.Parameter(torch.full((3 * HID,), 2.0, dtype=F64))
    after = m(x)[0]
    assert not torch.allclose(before, after)
    p = {n: t.detach() for n, t in m.named_parameters()}
    lengths = torch.full((2,), STEPS)
    expected = reference(p, x, torch.zeros(1, 2, HID, dtype=F64), lengths, 1, 1)[0]
    torch.testing.assert_close(after, expected, atol=1e-10, rtol=1e-8)


# ---------------------------------------------------------------------------------
# The autograd.Function: gradcheck, double backward, the plain path
# ---------------------------------------------------------------------------------

BATCH_SIZES = {"packed": [3, 3, 2, 1], "padded": [3, 3, 3, 3]}


def leaf(*shape):
    return torch.randn(*shape, dtype=F64, requires_grad=True)


def function_case(batch_sizes, reverse, bias=True):
    """(apply, tensor inputs) of one layer-direction over packed rows."""
    n_in, hid = 2, 2
    x, h0 = leaf(sum(batch_sizes), n_in), leaf(batch_sizes[0], hid)
    w_ih, w_hh = leaf(3 * hid, n_in), leaf(3 * hid, hid)
    b_ih, b_hh = (leaf(3 * hid), leaf(3 * hid)) if bias else (None, None)
    g_ih, g_hh = leaf(3 * hid), leaf(3 * hid)

    def apply(*t):
        x, w_ih, b_ih, w_hh, b_hh, g_ih, g_hh, h0 = t
        return LayerNormGRUKernelFunction.apply(
            x, w_ih, b_ih, w_hh, b_hh, g_ih, g_hh, h0, batch_sizes, reverse
        )

    return apply, (x, w_ih, b_ih, w_hh, b_hh, g_ih, g_hh, h0)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("layout", sorted(BATCH_SIZES))
@pytest.mark.parametrize("reverse", [False, True])
def test_function_gradcheck_and_gradgradcheck(reverse, layout, bias):
    torch.manual_seed(13)
    apply, args = function_case(BATCH_SIZES[layout], reverse, bias)
    assert gradcheck(apply, args)
    assert gradgradcheck(apply, args)


@pytest.mark.parametrize("reverse", [False, True])
def test_function_equals_its_plain_steps(reverse):
    """The hand-written backward and autograd through the plain steps agree."""
    torch.manual_seed(14)
    batch_sizes = BATCH_SIZES["packed"]
    apply, args = function_case(batch_sizes, reverse)

    def plain(x, w_ih, b_ih, w_hh, b_hh, g_ih, g_hh, h0):
        xa = lngru_project(x, w_ih, b_ih, g_ih)
        return lngru_kernel_plain(xa, w_hh, b_hh, g_hh, h0, batch_sizes, reverse)

    got, expected = apply(*args), plain(*args)
    loss_got = loss_of(*got)
    loss_expected = loss_of(*expected)
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0)
    grads_got = torch.autograd.grad(loss_got, args)
    grads_expected = torch.autograd.grad(loss_expected, args)
    for a, b in zip(grads_got, grads_expected, strict=True):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-10)


# several steps a span (sizes changing inside spans); one step; a span a step
SPAN_LAYOUTS = {
    "long": [3] * 9 + [2] * 6 + [1] * 5,
    "one step": [4],
    "short": [3, 3, 2, 1],
}
SPAN_MASKS = {
    "none": (False, False),
    "rec": (True, False),
    "zone": (False, True),
    "both": (True, True),
}


def span_case(batch_sizes, reverse, masks_on, bias=True):
    """(apply, plain, tensor inputs): the Function and its plain steps, with
    recurrent dropout and zoneout masks fixed as `masks_on` asks."""
    gen = torch.Generator().manual_seed(21)
    n_in, hid = 2, 3
    rows, batch = sum(batch_sizes), batch_sizes[0]

    def rand(*shape):
        return torch.randn(*shape, generator=gen, dtype=F64).requires_grad_()

    tensors = [
        rand(rows, n_in),
        rand(3 * hid, n_in),
        rand(3 * hid) if bias else None,
        rand(3 * hid, hid),
        rand(3 * hid) if bias else None,
        rand(3 * hid),
        rand(3 * hid),
        rand(batch, hid),
    ]
    half = torch.full((batch, hid), 0.5, dtype=F64)
    rec = torch.bernoulli(half, generator=gen) / 0.5 if masks_on[0] else None
    zone = torch.full((rows, hid), 0.5, dtype=F64)
    zone = torch.bernoulli(zone, generator=gen) if masks_on[1] else None

    def apply(*t):
        return LayerNormGRUKernelFunction.apply(*t, batch_sizes, reverse, rec, zone)

    def plain(x, w_ih, b_ih, w_hh, b_hh, g_ih, g_hh, h0):
        xa = lngru_project(x, w_ih, b_ih, g_ih)
        return lngru_kernel_plain(
            xa, w_hh, b_hh, g_hh, h0, batch_sizes, reverse, rec, zone
        )

    return apply, plain, tensors


@pytest.mark.parametrize("masks", sorted(SPAN_MASKS))
@pytest.mark.parametrize("layout", sorted(SPAN_LAYOUTS))
@pytest.mark.parametrize("reverse", [False, True])
def test_backward_spans_equal_the_plain_steps(reverse, layout, masks):
    """Backward a span of steps at a time (`kernel_spans`), whatever the spans
    hold: the gradients of autograd through the plain steps."""
    apply, plain, tensors = span_case(
        SPAN_LAYOUTS[layout], reverse, SPAN_MASKS[masks], bias=masks != "none"
    )
    args = [t for t in tensors if t is not None]

    def grads(fn):
        it = iter(args)
        return torch.autograd.grad(
            loss_of(*fn(*[next(it) if t is not None else None for t in tensors])),
            args,
        )

    for a, b in zip(grads(apply), grads(plain), strict=True):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize("masks", ["none", "both"])
def test_backward_with_some_inputs_needing_no_gradient(masks):
    """Each input alone asking for its gradient gets the one it gets among all."""
    apply, _, tensors = span_case(SPAN_LAYOUTS["long"], False, SPAN_MASKS[masks])
    expected = torch.autograd.grad(loss_of(*apply(*tensors)), tensors)
    for k in range(len(tensors)):
        alone = [t.detach().requires_grad_(j == k) for j, t in enumerate(tensors)]
        (got,) = torch.autograd.grad(loss_of(*apply(*alone)), [alone[k]])
        torch.testing.assert_close(got, expected[k], atol=1e-12, rtol=1e-12)


def test_backward_twice_with_retain_graph_gives_the_same_gradients():
    """Backward leaves what forward saved as it was."""
    torch.manual_seed(15)
    apply, args = function_case(BATCH_SIZES["packed"], False)
    loss = loss_of(*apply(*args))
    first = torch.autograd.grad(loss, args, retain_graph=True)
    second = torch.autograd.grad(loss, args)
    for a, b in zip(first, second, strict=True):
        assert torch.equal(a, b)


def test_first_order_backward_does_no_recomputation(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("first-order backward ran the plain steps")

    torch.manual_seed(16)
    m = make_module(2, True)
    x, h0 = inputs(m)
    out, h = m(x.requires_grad_(), h0, LENGTHS)
    monkeypatch.setattr(lngru_module, "lngru_kernel_plain", refuse)
    loss_of(out, h).backward()
    assert x.grad is not None


@pytest.mark.parametrize("with_lengths", [False, True])
def test_module_gradcheck_and_gradgradcheck(with_lengths):
    torch.manual_seed(17)
    m = LayerNormGRU(2, 2, 2, batch_first=True, bidirectional=True).to(F64)
    names = [n for n, _ in m.named_parameters()]
    lengths = torch.tensor([2, 3, 1]) if with_lengths else None

    def run(x, h0, *params):
        weights = dict(zip(names, params, strict=True))
        return torch.func.functional_call(m, weights, (x, h0, lengths))

    params = [p.detach().clone().requires_grad_() for p in m.parameters()]
    args = (leaf(3, 3, 2), leaf(4, 3, 2), *params)
    assert gradcheck(run, args)
    assert gradgradcheck(run, args, fast_mode=True)


def test_eager_runs_the_hand_written_backward():
    m = LayerNormGRU(N_IN, HID, batch_first=True, impl="auto")
    out, _ = m(torch.randn(2, STEPS, N_IN))  # auto: ours even without lengths
    seen, stack = set(), [out.grad_fn]
    while stack:
        fn = stack.pop()
        if fn is not None and fn not in seen:
            seen.add(fn)
            stack.extend(f for f, _ in fn.next_functions)
    names = {type(fn).__name__ for fn in seen}
    assert "LayerNormGRUKernelFunctionBackward" in names, names


def test_empty_batch_and_unbatched_input():
    torch.manual_seed(18)
    m = make_module(2, True)
    out, h = m(torch.randn(0, STEPS, N_IN, dtype=F64))
    assert out.shape == (0, STEPS, 2 * HID) and h.shape == (4, 0, HID)
    x, h0 = inputs(m)
    out, h = m(x[0], h0[:, 0])  # one sequence, unbatched
    full_out, full_h = m(x, h0)
    torch.testing.assert_close(out, full_out[0], atol=1e-12, rtol=0)
    torch.testing.assert_close(h, full_h[:, 0], atol=1e-12, rtol=0)


# ---------------------------------------------------------------------------------
# TorchScript, export, compile: the plain steps
# ---------------------------------------------------------------------------------


def test_torchscript_equals_eager():
    torch.manual_seed(19)
    m = make_module(2, True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.script is deprecated
        scripted = torch.jit.script(m)
    x, h0 = inputs(m)
    for form in ("full", "lengths"):
        got = run_module(m, x, h0, form, scripted)
        assert_same(got, run_module(m, x, h0, form))


def test_export_equals_eager():
    torch.manual_seed(20)
    m = make_module(2, True).eval()
    x, h0 = inputs(m)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exported = torch.export.export(m, (x, h0))
    x2 = torch.randn_like(x)
    with torch.no_grad():
        got, expected = exported.module()(x2, h0), m(x2, h0)
    torch.testing.assert_close(got[0], expected[0], atol=1e-12, rtol=0)
    torch.testing.assert_close(got[1], expected[1], atol=1e-12, rtol=0)


def test_torch_compile_equals_eager():
    torch.manual_seed(21)
    m = make_module(1, True)
    x, h0 = inputs(m)
    expected = run_module(m, x, h0, "full")
    torch._dynamo.reset()
    with torch._dynamo.config.patch(allow_rnn=True):
        compiled = torch.compile(m, backend="aot_eager", fullgraph=True)
        got = run_module(m, x, h0, "full", compiled)
    torch._dynamo.reset()
    assert_same(got, expected)
