"""Recurrent dropout and zoneout in the layer-normalised kernels (issue 14).

LayerNormLSTM (with peepholes, projections) and LayerNormGRU against plain loops
written here from language.md section 9, one sequence and one step at a time, in
float64, fed the masks the module drew (`tests.nn.masks.recorded_step_masks`):
outputs, final states and every gradient, padded, with unsorted lengths and
packed, both directions, two layers, each option alone and together. Then the
Functions directly (gradcheck, gradgradcheck, the plain steps with the same
masks), eval mode, the masks' sharing and rates, TorchScript and export.
"""

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd import gradcheck, gradgradcheck

from rnnspec.nn import lngru as lngru_module
from rnnspec.nn import lnlstm as lnlstm_module
from rnnspec.nn.lngru import (
    LayerNormGRU,
    LayerNormGRUKernelFunction,
    lngru_kernel_plain,
    lngru_project,
)
from rnnspec.nn.lnlstm import LayerNormLSTM, LNLSTMKernelFunction, lnlstm_kernel_plain
from tests.nn.masks import recorded_step_masks

F64 = torch.float64
N_IN, HID, PROJ, BATCH, STEPS = 3, 4, 2, 3, 5
LENGTHS = torch.tensor([4, 5, 1])  # unsorted, with 1 and T


# ---------------------------------------------------------------------------------
# The reference: the contract's equations, a sequence and a step at a time
# ---------------------------------------------------------------------------------


def ln(v, gain, bias=None):
    """LN(v; γ, β) over the whole vector, biased variance, eps 1e-5."""
    return F.layer_norm(v, v.shape[-1:], gain, bias, 1e-5)


def zoned(d, prev, new):
    """Zoneout: d ⊙ prev + (1 - d) ⊙ new; d None: no zoneout."""
    return new if d is None else d * prev + (1 - d) * new


def lstm_step(m, p, x_t, h, c, rec, d_h, d_c):
    """(h_t, c_t) of the layer-normalised LSTM, with recurrent dropout `rec` on
    the matmul's input and zoneout d_h, d_c (None: off)."""
    h_in = h if rec is None else rec * h
    a = ln(p("weight_ih") @ x_t, p("weight_ln_ih"))
    a = a + ln(p("weight_hh") @ h_in, p("weight_ln_hh"))
    if m.bias:
        a = a + p("bias_ih") + p("bias_hh")
    a_i, a_f, a_g, a_o = a.chunk(4)
    if m.peephole:
        p_i, p_f, p_o = p("weight_ch").chunk(3)
        a_i, a_f = a_i + p_i * c, a_f + p_f * c
    c_new = torch.sigmoid(a_f) * c + torch.sigmoid(a_i) * torch.tanh(a_g)  # c̃_t
    if m.peephole:
        a_o = a_o + p_o * c_new
    h_new = torch.sigmoid(a_o) * torch.tanh(ln(c_new, p("weight_ln_c"), p("bias_ln_c")))
    if m.proj_size > 0:
        h_new = p("weight_hr") @ h_new
    return zoned(d_h, h, h_new), zoned(d_c, c, c_new)


def gru_step(m, p, x_t, h, c, rec, d_h, d_c):
    """(h_t, None) of the layer-normalised GRU: the mask only on W_hh's input,
    z ⊙ h_{t-1} reads the state itself."""
    h_in = h if rec is None else rec * h
    a = ln(p("weight_ih") @ x_t, p("weight_ln_ih"))
    b = ln(p("weight_hh") @ h_in, p("weight_ln_hh"))
    if m.bias:
        a, b = a + p("bias_ih"), b + p("bias_hh")
    a_r, a_z, a_n = a.chunk(3)
    b_r, b_z, b_n = b.chunk(3)
    r, z = torch.sigmoid(a_r + b_r), torch.sigmoid(a_z + b_z)
    n = torch.tanh(a_n + r * b_n)
    return zoned(d_h, h, (1 - z) * n + z * h), None


def reference(m, x, state, lengths, masks):
    """(B, T, D*width) outputs, zero past each length, and the final states of a
    batch-first input; `masks[k]` = [rec (B, W), zone_h (T, B, W), zone_c
    (T, B, H)] of layer-direction k, None where off."""
    lstm = m.mode == "LSTM"
    step = lstm_step if lstm else gru_step
    batch, steps, _ = x.shape
    directions = 2 if m.bidirectional else 1
    finals = [[[None] * batch for _ in masks] for _ in state]
    outputs = []
    for b in range(batch):
        n = int(lengths[b])
        layer_in = [x[b, t] for t in range(n)]
        for layer in range(m.num_layers):
            per_direction = []
            for d in range(directions):
                k = layer * directions + d
                suffix = "_reverse" if d else ""

                def p(stem, layer=layer, suffix=suffix):
                    return getattr(m, f"{stem}_l{layer}{suffix}")

                rec, zone_h, zone_c = masks[k]
                rec = None if rec is None else rec[b]
                h, c = state[0][k, b], state[1][k, b] if lstm else None
                outs = [None] * n
                for t in reversed(range(n)) if d else range(n):
                    d_h = None if zone_h is None else zone_h[t, b]
                    d_c = None if zone_c is None else zone_c[t, b]
                    h, c = step(m, p, layer_in[t], h, c, rec, d_h, d_c)
                    outs[t] = h
                finals[0][k][b] = h
                if lstm:
                    finals[1][k][b] = c
                per_direction.append(outs)
            layer_in = [torch.cat([o[t] for o in per_direction]) for t in range(n)]
        rows = torch.stack(layer_in)
        outputs.append(torch.cat([rows, rows.new_zeros(steps - n, rows.shape[1])]))
    stacked = [torch.stack([torch.stack(row) for row in s]) for s in finals]
    return torch.stack(outputs), stacked


def eval_masks(m, batch=BATCH, steps=STEPS):
    """The masks eval mode amounts to: no recurrent dropout, zoneout by its rate."""
    widths = m._kernel_state_sizes()
    rates = [m.zoneout, m.zoneout_cell]
    zones = [
        torch.full((steps, batch, widths[min(j, len(widths) - 1)]), rate, dtype=F64)
        if rate > 0
        else None
        for j, rate in enumerate(rates)
    ]
    directions = 2 if m.bidirectional else 1
    return [[None, *zones] for _ in range(m.num_layers * directions)]


# ---------------------------------------------------------------------------------
# Running the module and the reference alike
# ---------------------------------------------------------------------------------


def make_lstm(layers=2, bidirectional=True, peephole=True, proj=PROJ, **kw):
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


def make_gru(layers=2, bidirectional=True, bias=True, **kw):
    """A float64 LayerNormGRU whose gains are not ones."""
    m = LayerNormGRU(
        N_IN,
        HID,
        layers,
        bias=bias,
        batch_first=True,
        bidirectional=bidirectional,
        **kw,
    ).to(F64)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if "_ln_" in name:
                p.uniform_(0.5, 1.5)
    return m


def make_states(m, batch=BATCH):
    rows = m.num_layers * (2 if m.bidirectional else 1)
    widths = m._kernel_state_sizes()
    return [torch.randn(rows, batch, w, dtype=F64) for w in widths]


def call_module(m, x, state, mode):
    """The module's batch-first padded output and final states (as a list).
    mode: "padded" (no lengths), "lengths" (LENGTHS) or "packed"."""
    hx = tuple(state) if len(state) == 2 else state[0]
    if mode == "packed":
        packed = nn.utils.rnn.pack_padded_sequence(
            x, LENGTHS, batch_first=True, enforce_sorted=False
        )
        out, final = m(packed, hx)
        out, _ = nn.utils.rnn.pad_packed_sequence(
            out, batch_first=True, total_length=x.shape[1]
        )
    else:
        out, final = m(x, hx, LENGTHS if mode == "lengths" else None)
    return out, list(final) if isinstance(final, tuple) else [final]


def run(m, x, state, mode, masks=None):
    """Outputs, final states and the gradients of a fixed random linear loss, of
    the module (masks None; returns the masks it drew too) or of the reference
    fed `masks`."""
    m.zero_grad(set_to_none=True)
    x = x.clone().requires_grad_()
    state = [s.clone().requires_grad_() for s in state]
    if masks is None:
        with recorded_step_masks(m) as found:
            out, final = call_module(m, x, state, mode)
        masks = found
    else:
        full = torch.full((x.shape[0],), x.shape[1])
        out, final = reference(
            m, x, state, full if mode == "padded" else LENGTHS, masks
        )
    gen = torch.Generator().manual_seed(7)
    loss = (out * torch.randn(out.shape, generator=gen, dtype=F64)).sum()
    for s in final:
        loss = loss + (s * torch.randn(s.shape, generator=gen, dtype=F64)).sum()
    loss.backward()
    grads = {"x": x.grad, **{f"state {j}": s.grad for j, s in enumerate(state)}}
    grads.update({name: p.grad for name, p in m.named_parameters()})
    return (out.detach(), [s.detach() for s in final], grads), masks


def assert_same(got, expected, tol=1e-10):
    out_a, final_a, grads_a = got
    out_b, final_b, grads_b = expected
    torch.testing.assert_close(out_a, out_b, atol=tol, rtol=tol)
    for a, b in zip(final_a, final_b, strict=True):
        torch.testing.assert_close(a, b, atol=tol, rtol=tol)
    assert sorted(grads_a) == sorted(grads_b)
    for name, b in grads_b.items():
        assert grads_a[name] is not None and b is not None, name
        torch.testing.assert_close(grads_a[name], b, atol=tol, rtol=tol, msg=name)


def assert_masks_bite(masks, rec, zone_h, zone_c):
    """Each option drew masks (over all layer-directions) with both outcomes: a
    test with all-ones or all-zeros masks could not fail; off options drew none."""
    for j, on in enumerate((rec, zone_h, zone_c)):
        assert all((k_masks[j] is not None) == on for k_masks in masks)
        if on:
            values = torch.cat([k_masks[j].flatten() for k_masks in masks])
            assert (values == 0).any() and (values != 0).any()


def check_against_reference(m, modes=("padded", "lengths", "packed")):
    torch.manual_seed(0)
    x, state = torch.randn(BATCH, STEPS, N_IN, dtype=F64), make_states(m)
    for mode in modes:
        got, masks = run(m, x, state, mode)
        expected, _ = run(m, x, state, mode, masks)
        assert_same(got, expected)
    return masks


# ---------------------------------------------------------------------------------
# The modules in training against the reference, with the masks they drew
# ---------------------------------------------------------------------------------

OPTIONS = {
    "recurrent_dropout": dict(recurrent_dropout=0.4),
    "zoneout": dict(zoneout=0.4),
    "both": dict(recurrent_dropout=0.3, zoneout=0.5),
}
LSTM_OPTIONS = {
    **OPTIONS,
    "zoneout_h_only": dict(zoneout=0.4, zoneout_cell=0.0),
    "zoneout_c_only": dict(zoneout=0.0, zoneout_cell=0.5),
    "all_rates_differ": dict(recurrent_dropout=0.2, zoneout=0.3, zoneout_cell=0.6),
}


def drawn(options, cell_state):
    """Which masks the options draw: rec, zone_h, zone_c."""
    zone = options.get("zoneout", 0.0)
    zone_c = options.get("zoneout_cell", zone) if cell_state else 0.0
    return options.get("recurrent_dropout", 0.0) > 0, zone > 0, zone_c > 0


@pytest.mark.parametrize("variant", ["plain", "peephole_proj"])
@pytest.mark.parametrize("option", sorted(LSTM_OPTIONS))
def test_lstm_matches_the_equations(option, variant):
    torch.manual_seed(1)
    kw = LSTM_OPTIONS[option]
    extra = dict(peephole=False, proj=0) if variant == "plain" else {}
    m = make_lstm(**extra, **kw).train()
    masks = check_against_reference(m)
    assert_masks_bite(masks, *drawn(kw, True))


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize("option", sorted(OPTIONS))
def test_gru_matches_the_equations(option, bias):
    torch.manual_seed(2)
    m = make_gru(bias=bias, **OPTIONS[option]).train()
    masks = check_against_reference(m)
    assert_masks_bite(masks, *drawn(OPTIONS[option], False))


def test_one_direction_three_layers_and_a_single_step():
    """Other shapes of the stack: 3 layers one way; a sequence of one step."""
    torch.manual_seed(3)
    for m in (
        make_lstm(3, False, recurrent_dropout=0.3, zoneout=0.3, zoneout_cell=0.5),
        make_gru(3, False, recurrent_dropout=0.3, zoneout=0.4),
    ):
        check_against_reference(m.train(), ("lengths",))
        x, state = torch.randn(2, 1, N_IN, dtype=F64), make_states(m, 2)
        got, masks = run(m, x, state, "padded")
        assert_same(got, run(m, x, state, "padded", masks)[0])


def test_the_hand_written_backward_runs_in_training(monkeypatch):
    """Eager training with both options runs the Functions (no per-step autograd
    graph, no recomputation)."""

    def forbidden(*args):
        raise AssertionError("recomputed the forward without create_graph")

    monkeypatch.setattr(lnlstm_module, "kernel_recompute_grads", forbidden)
    monkeypatch.setattr(lngru_module, "kernel_recompute_grads", forbidden)
    for m, name in (
        (make_lstm(recurrent_dropout=0.3, zoneout=0.3), "LNLSTMKernelFunction"),
        (make_gru(recurrent_dropout=0.3, zoneout=0.3), "LayerNormGRUKernelFunction"),
    ):
        x = torch.randn(BATCH, STEPS, N_IN, dtype=F64, requires_grad=True)
        out, _ = m.train()(x, None, LENGTHS)
        seen, stack = set(), [out.grad_fn]
        while stack:
            fn = stack.pop()
            if fn is not None and fn not in seen:
                seen.add(fn)
                stack.extend(f for f, _ in fn.next_functions)
        names = {type(fn).__name__ for fn in seen}
        assert name + "Backward" in names, names
        out.sum().backward()
        assert x.grad is not None


# ---------------------------------------------------------------------------------
# Eval mode: recurrent dropout is the identity, zoneout its expectation
# ---------------------------------------------------------------------------------


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_eval_recurrent_dropout_is_the_identity(cell):
    torch.manual_seed(4)
    make = make_lstm if cell == "lstm" else make_gru
    with_it, without = make(recurrent_dropout=0.5), make()
    without.load_state_dict(with_it.state_dict())
    x, state = torch.randn(BATCH, STEPS, N_IN, dtype=F64), make_states(with_it)
    with_it.eval()
    without.eval()
    for mode in ("padded", "lengths", "packed"):
        got = call_module(with_it, x, state, mode)
        expected = call_module(without, x, state, mode)
        assert torch.equal(got[0], expected[0])
        for a, b in zip(got[1], expected[1], strict=True):
            assert torch.equal(a, b)
    trained = call_module(with_it.train(), x, state, "padded")[0]
    assert not torch.allclose(trained, expected[0])  # the option does something


@pytest.mark.parametrize(
    "cell, kw",
    [
        ("lstm", dict(zoneout=0.3, zoneout_cell=0.6, recurrent_dropout=0.5)),
        ("lstm", dict(zoneout=0.0, zoneout_cell=0.4)),
        ("gru", dict(zoneout=0.3, recurrent_dropout=0.5)),
    ],
)
def test_eval_zoneout_blends_by_the_rate(cell, kw):
    """In eval h_t = P h_{t-1} + (1 - P) h̃_t (c with its own rate): the
    reference with d = P, outputs and gradients, padded and with lengths."""
    torch.manual_seed(5)
    m = (make_lstm if cell == "lstm" else make_gru)(**kw).eval()
    x, state = torch.randn(BATCH, STEPS, N_IN, dtype=F64), make_states(m)
    for mode in ("padded", "lengths"):
        got, masks = run(m, x, state, mode)
        assert all(k == [None, None, None] for k in masks)  # nothing drawn
        expected, _ = run(m, x, state, mode, eval_masks(m))
        assert_same(got, expected)


# ---------------------------------------------------------------------------------
# The masks: shapes, sharing over time, independence, rates
# ---------------------------------------------------------------------------------


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_a_recurrent_mask_is_applied_at_every_step(cell):
    """One sequence whose mask drops unit u: no step's matmul reads h[u], so the
    column u of dL/dW_hh is exactly zero (it sums over all steps), and the
    others are not; for the LSTM, h0 reaches nothing through a dropped unit."""
    torch.manual_seed(6)
    make = make_lstm if cell == "lstm" else make_gru
    kw = dict(peephole=False, proj=0) if cell == "lstm" else {}
    m = make(1, False, recurrent_dropout=0.5, **kw).train()
    x = torch.randn(1, 8, N_IN, dtype=F64)
    for seed in range(50):  # a draw with both dropped and kept units
        torch.manual_seed(seed)
        state = [s.requires_grad_() for s in make_states(m, 1)]
        with recorded_step_masks(m) as found:
            out, final = call_module(m, x, state, "padded")
        rec = found[0][0][0]  # (W,)
        if (rec == 0).any() and (rec != 0).any():
            break
    assert set(rec.unique().tolist()) == {0.0, 2.0}  # Bernoulli(1/2) / (1/2)
    (out.sum() + sum(s.sum() for s in final)).backward()
    d_whh = m.weight_hh_l0.grad
    dropped = rec == 0
    assert torch.all(d_whh[:, dropped] == 0)
    assert torch.all(d_whh[:, ~dropped].abs().sum(0) > 0)
    if cell == "lstm":  # h0 feeds only the first step's matmul
        assert torch.all(state[0].grad[0, 0, dropped] == 0)
        assert torch.all(state[0].grad[0, 0, ~dropped] != 0)


def test_masks_have_their_shapes_and_differ_between_draws():
    """Per layer-direction and per call, independent masks of the documented
    shapes (h's width is P with proj)."""
    torch.manual_seed(7)
    batch = 16
    m = make_lstm(recurrent_dropout=0.5, zoneout=0.5, zoneout_cell=0.5).train()
    x = torch.randn(batch, STEPS, N_IN, dtype=F64)
    draws = []
    for _ in range(2):
        with recorded_step_masks(m) as found:
            call_module(m, x, make_states(m, batch), "padded")
        draws.append(found)
    for rec, zone_h, zone_c in draws[0]:
        assert rec.shape == (batch, PROJ)
        assert zone_h.shape == (STEPS, batch, PROJ)
        assert zone_c.shape == (STEPS, batch, HID)
        assert not torch.equal(zone_h, zone_c[..., :PROJ])
        assert len({tuple(row.tolist()) for row in rec}) > 1  # sequences differ
    flat = [[t.flatten() for t in k] for k in draws[0]]
    for a, b in zip(flat, flat[1:]):  # layer-directions differ
        assert not any(torch.equal(u, v) for u, v in zip(a, b))
    for a, b in zip(draws[0], draws[1], strict=True):  # calls differ
        assert not any(torch.equal(u, v) for u, v in zip(a, b))


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_drawn_rates(cell):
    """Over a big batch, the fraction of dropped units is the recurrent-dropout
    rate and that of kept-previous units the zoneout rate, within 4 sigma."""
    torch.manual_seed(8)
    batch, steps = 512, 8
    rates = dict(recurrent_dropout=0.25, zoneout=0.1)
    if cell == "lstm":
        rates["zoneout_cell"] = 0.35
        m = LayerNormLSTM(2, 8, proj_size=4, batch_first=True, **rates)
    else:
        m = LayerNormGRU(2, 8, batch_first=True, **rates)
    with recorded_step_masks(m) as found, torch.no_grad():
        m.train()(torch.randn(batch, steps, 2))
    rec, zone_h, zone_c = found[0]
    names = ["recurrent_dropout", "zoneout", "zoneout_cell"]
    fractions = [(rec == 0).double().mean(), zone_h.double().mean()]
    sizes = [rec.numel(), zone_h.numel()]
    if cell == "lstm":
        fractions.append(zone_c.double().mean())
        sizes.append(zone_c.numel())
    else:
        assert zone_c is None
    for name, fraction, n in zip(names, fractions, sizes):
        p = rates[name]
        assert abs(float(fraction) - p) < 4 * (p * (1 - p) / n) ** 0.5, name
    kept = rec[rec != 0]
    torch.testing.assert_close(kept, torch.full_like(kept, 1 / 0.75))


# ---------------------------------------------------------------------------------
# The Functions directly: gradcheck with fixed masks, the plain steps agree
# ---------------------------------------------------------------------------------


def fixed_masks(batch_sizes, width, hidden, seed, eval_rates=None):
    """rec (B, W) scaled by 1/(1-P), zone_h (N, W), zone_c (N, H) 0/1 rows; with
    `eval_rates` (P_h, P_c), the zones are their rates as stride-0 views."""
    gen = torch.Generator().manual_seed(seed)
    rows, batch = sum(batch_sizes), batch_sizes[0]
    rec = torch.bernoulli(torch.full((batch, width), 0.6, dtype=F64), generator=gen)
    if eval_rates is not None:
        p_h, p_c = eval_rates
        return [
            None,
            torch.full((1, 1), p_h, dtype=F64).expand(rows, width),
            torch.full((1, 1), p_c, dtype=F64).expand(rows, hidden),
        ]
    return [
        rec / 0.6,
        torch.bernoulli(torch.full((rows, width), 0.5, dtype=F64), generator=gen),
        torch.bernoulli(torch.full((rows, hidden), 0.5, dtype=F64), generator=gen),
    ]


def lstm_function_case(batch_sizes, reverse, peephole, proj, masks_on, eval_rates=None):
    """(apply, plain, tensors): LNLSTMKernelFunction and lnlstm_kernel_plain over
    the tensor inputs (x, weights, norms, [peep], [w_hr], h0, c0), masks fixed."""
    gen = torch.Generator().manual_seed(11)
    H, n_in = 3, 2
    width = H - 1 if proj else H

    def rand(*shape):
        return torch.randn(*shape, generator=gen, dtype=F64).requires_grad_()

    rows, batch = sum(batch_sizes), batch_sizes[0]
    inputs = [
        rand(rows, n_in),
        rand(4 * H, n_in),
        rand(4 * H),
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
    masks = fixed_masks(batch_sizes, width, H, 12, eval_rates)
    masks = [m if on else None for m, on in zip(masks, masks_on, strict=True)]
    present = [t for t in inputs if t is not None]

    def with_masks(fn):
        def call(*tensors):
            it = iter(tensors)
            args = [next(it) if t is not None else None for t in inputs]
            return fn(*args, batch_sizes, reverse, *masks)

        return call

    return (
        with_masks(LNLSTMKernelFunction.apply),
        with_masks(lnlstm_kernel_plain),
        present,
    )


def gru_function_case(batch_sizes, reverse, masks_on):
    """As lstm_function_case, for LayerNormGRUKernelFunction (no cell state)."""
    gen = torch.Generator().manual_seed(13)
    H, n_in = 3, 2

    def rand(*shape):
        return torch.randn(*shape, generator=gen, dtype=F64).requires_grad_()

    rows, batch = sum(batch_sizes), batch_sizes[0]
    tensors = [
        rand(rows, n_in),
        rand(3 * H, n_in),
        rand(3 * H),
        rand(3 * H, H),
        rand(3 * H),
        rand(3 * H),
        rand(3 * H),
        rand(batch, H),
    ]
    masks = fixed_masks(batch_sizes, H, H, 14)[:2]
    masks = [m if on else None for m, on in zip(masks, masks_on, strict=True)]

    def apply(*t):
        return LayerNormGRUKernelFunction.apply(*t, batch_sizes, reverse, *masks)

    def plain(x, w_ih, b_ih, w_hh, b_hh, g_ih, g_hh, h0):
        xa = lngru_project(x, w_ih, b_ih, g_ih)
        return lngru_kernel_plain(
            xa, w_hh, b_hh, g_hh, h0, batch_sizes, reverse, *masks
        )

    return apply, plain, tensors


def assert_plain_agrees(apply, plain, tensors):
    """The Function and its plain steps: same outputs and gradients."""
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


MASKS_ON = {
    "rec": (True, False, False),
    "zone": (False, True, True),
    "zone_h": (False, True, False),
    "zone_c": (False, False, True),
    "all": (True, True, True),
}
LSTM_FUNCTION_CASES = [
    (batch_sizes, reverse, variant, masks)
    for batch_sizes in ([3, 3, 3], [4, 3, 3, 1])
    for reverse in (False, True)
    for variant in ("plain", "peephole_proj")
    for masks in ("rec", "zone", "all")
] + [([4, 3, 3, 1], True, "peephole_proj", m) for m in ("zone_h", "zone_c")]


@pytest.mark.parametrize("batch_sizes, reverse, variant, masks", LSTM_FUNCTION_CASES)
def test_lstm_function_gradcheck_and_plain_steps(batch_sizes, reverse, variant, masks):
    special = variant == "peephole_proj"
    apply, plain, tensors = lstm_function_case(
        batch_sizes, reverse, special, special, MASKS_ON[masks]
    )
    assert gradcheck(apply, tensors)
    assert_plain_agrees(apply, plain, tensors)


@pytest.mark.parametrize("reverse", [False, True])
def test_lstm_function_with_eval_zones(reverse):
    """Eval's zones are stride-0 views of the rates: the Function reads them,
    writes nothing into them, and agrees with its plain steps."""
    apply, plain, tensors = lstm_function_case(
        [4, 3, 3, 1], reverse, True, True, (False, True, True), (0.3, 0.7)
    )
    assert gradcheck(apply, tensors)
    assert_plain_agrees(apply, plain, tensors)


@pytest.mark.parametrize("masks", ["rec", "zone_h", "all"])
@pytest.mark.parametrize("batch_sizes", [[3, 3, 3], [4, 3, 3, 1]])
@pytest.mark.parametrize("reverse", [False, True])
def test_gru_function_gradcheck_and_plain_steps(reverse, batch_sizes, masks):
    apply, plain, tensors = gru_function_case(batch_sizes, reverse, MASKS_ON[masks][:2])
    assert gradcheck(apply, tensors)
    assert_plain_agrees(apply, plain, tensors)


def test_function_gradgradcheck_with_masks():
    """create_graph=True differentiates the plain steps with the same masks."""
    for apply, _, tensors in (
        lstm_function_case([4, 3, 3, 1], True, True, True, (True, True, True)),
        gru_function_case([4, 3, 3, 1], False, (True, True)),
    ):
        outputs = apply(*tensors)
        loss = sum((o * torch.randn_like(o)).sum() for o in outputs)
        with_graph = torch.autograd.grad(loss, tensors, create_graph=True)
        first = torch.autograd.grad(loss, tensors)
        for g, e in zip(with_graph, first, strict=True):
            assert g.requires_grad
            torch.testing.assert_close(g, e)
        assert gradgradcheck(apply, tensors)


# ---------------------------------------------------------------------------------
# The plain path in the modules: TorchScript, empty batches
# ---------------------------------------------------------------------------------


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_torchscript_eval_with_zoneout_equals_eager(cell):
    torch.manual_seed(9)
    kw = dict(recurrent_dropout=0.4, zoneout=0.3)
    m = make_lstm(zoneout_cell=0.5, **kw) if cell == "lstm" else make_gru(**kw)
    m.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.script is deprecated
        scripted = torch.jit.script(m)
    x, state = torch.randn(BATCH, STEPS, N_IN, dtype=F64), make_states(m)
    hx = tuple(state) if cell == "lstm" else state[0]
    for lengths in (None, LENGTHS):
        got, expected = scripted(x, hx, lengths), m(x, hx, lengths)
        torch.testing.assert_close(got[0], expected[0], atol=1e-12, rtol=0)
        finals = zip(
            *(f if isinstance(f, tuple) else (f,) for f in (got[1], expected[1]))
        )
        for a, b in finals:
            torch.testing.assert_close(a, b, atol=1e-12, rtol=0)
    full = torch.full((BATCH,), STEPS)
    expected, _ = reference(m, x, state, full, eval_masks(m))
    torch.testing.assert_close(scripted(x, hx)[0], expected, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_empty_batch_in_training(cell):
    """An empty batch runs the plain steps, masks and all."""
    kw = dict(recurrent_dropout=0.4, zoneout=0.3)
    m = (make_lstm(**kw) if cell == "lstm" else make_gru(**kw)).train()
    out, _ = m(torch.randn(0, STEPS, N_IN, dtype=F64))
    width = 2 * (PROJ if cell == "lstm" else HID)
    assert out.shape == (0, STEPS, width)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_torchscript_training_equals_eager_under_the_same_seed(cell):
    """Scripted, the plain steps run, drawing the same masks from the same seed:
    the same outputs and parameter gradients as the eager Functions."""
    kw = dict(recurrent_dropout=0.3, zoneout=0.4)
    m = make_lstm(zoneout_cell=0.5, **kw) if cell == "lstm" else make_gru(**kw)
    m.train()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.script is deprecated
        scripted = torch.jit.script(m)
    x = torch.randn(BATCH, STEPS, N_IN, dtype=F64)
    params = list(m.parameters())
    for lengths in (None, LENGTHS):
        results = []
        for call in (m, scripted):
            torch.manual_seed(10)
            out = call(x, None, lengths)[0]
            results.append([out, *torch.autograd.grad((out * out).sum(), params)])
        for a, b in zip(*results, strict=True):
            torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-10)
    torch.manual_seed(11)  # another seed, other masks
    assert not torch.allclose(scripted(x, None, LENGTHS)[0], results[0][0])


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_export_eval_with_zoneout_equals_eager(cell):
    """torch.export traces the plain steps with zoneout's rates: eager's numbers."""
    torch.manual_seed(12)
    kw = dict(recurrent_dropout=0.3, zoneout=0.4)
    m = make_lstm(zoneout_cell=0.5, **kw) if cell == "lstm" else make_gru(**kw)
    m.eval()
    x = torch.randn(BATCH, STEPS, N_IN, dtype=F64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exported = torch.export.export(m, (x,)).module()
    x2 = torch.randn_like(x)
    with torch.no_grad():
        got, expected = exported(x2), m(x2)
    torch.testing.assert_close(got[0], expected[0], atol=1e-12, rtol=0)
    without = (make_lstm() if cell == "lstm" else make_gru()).eval()
    without.load_state_dict(m.state_dict())
    assert not torch.allclose(without(x2)[0], expected[0])  # zoneout counts
