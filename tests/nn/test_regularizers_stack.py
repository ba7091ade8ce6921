"""The stack-level regularizers (design section 9): `weight_drop` (DropConnect on W_hh,
one mask per layer-direction per forward call) and `locked_dropout` (the dropout
between layers draws one mask per sequence for all its steps), on every kernel class
and on both kernels.

In training, the module is checked against a reference written from the equations a
sequence and a step at a time (float64), given the masks the module drew (recorded
through the methods that draw them: tests/nn/masks.py): outputs, final states and
the gradients of the input and of every parameter. In eval both are the identity.
"""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rnnspec.nn import (
    CustomGRU,
    CustomLSTM,
    CustomRNN,
    LayerNormGRU,
    LayerNormLSTM,
    PeepholeLSTM,
)
from tests.nn.masks import recorded_locked_masks, recorded_weight_masks

N_IN, HID, PROJ = 3, 4, 2
CELLS = {
    "rnn_tanh": (CustomRNN, {"nonlinearity": "tanh"}),
    "rnn_relu": (CustomRNN, {"nonlinearity": "relu"}),
    "gru": (CustomGRU, {}),
    "lstm": (CustomLSTM, {}),
    "peephole": (PeepholeLSTM, {}),
    "lnlstm": (LayerNormLSTM, {"peephole": True}),
    "lngru": (LayerNormGRU, {}),
}
TORCH_CELLS = ("rnn_tanh", "rnn_relu", "gru", "lstm")  # the cells torch's kernel runs
CASES = [(cell, "custom") for cell in CELLS] + [(c, "torch") for c in TORCH_CELLS]
LSTMS = ("lstm", "peephole", "lnlstm")
# layers, bidirectional, batch_first, residual, form, weight_drop, locked dropout
CONFIGS = {
    "both-bidir-packed": (2, True, True, False, "packed", 0.5, 0.4),
    "both-residual-lengths": (3, False, False, True, "lengths", 0.3, 0.5),
    "weight-drop-bidir-padded": (2, True, True, False, "padded", 0.5, 0.0),
    "weight-drop-unbatched": (1, True, False, False, "unbatched", 0.4, 0.0),
    "locked-residual-packed": (3, True, False, True, "packed", 0.0, 0.4),
}


def build(
    cell,
    impl="custom",
    layers=2,
    bidirectional=True,
    batch_first=True,
    residual=False,
    weight_drop=0.5,
    locked=0.4,
    proj=0,
    hidden=HID,
):
    """A float64 module; `locked` P > 0: dropout P between layers, locked. Layer
    norms and peepholes drawn away from their init so that they matter."""
    cls, extra = CELLS[cell]
    kw = dict(extra)
    if proj:
        kw["proj_size"] = proj
    torch.manual_seed(0)
    module = cls(
        N_IN,
        hidden,
        layers,
        batch_first=batch_first,
        bidirectional=bidirectional,
        dropout=locked,
        impl=impl,
        residual=residual,
        weight_drop=weight_drop,
        locked_dropout=locked > 0,
        **kw,
    ).double()
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "_ln_" in name or name.startswith("weight_ch"):
                p.uniform_(0.5, 1.5)
    return module


# ---------------------------------------------------------------------------------
# The reference: one sequence, one step at a time, from the equations
# ---------------------------------------------------------------------------------


def ln(v, gain, bias=None):
    """LN(v; γ, β) over the whole vector, biased variance, eps 1e-5."""
    return F.layer_norm(v, v.shape, gain, bias, 1e-5)


def step(cell, p, sfx, w_hh, x, h, c):
    """One step of one layer-direction (1-D vectors) with W_hh = `w_hh`."""
    wx, wh = p[f"weight_ih_l{sfx}"] @ x, w_hh @ h
    if cell in ("lnlstm", "lngru"):
        wx, wh = ln(wx, p[f"weight_ln_ih_l{sfx}"]), ln(wh, p[f"weight_ln_hh_l{sfx}"])
    gi, gh = wx + p[f"bias_ih_l{sfx}"], wh + p[f"bias_hh_l{sfx}"]
    if cell in LSTMS:
        a_i, a_f, a_g, a_o = (gi + gh).chunk(4)
        peep = p.get(f"weight_ch_l{sfx}")  # none: torch's LSTM, p = 0 (design §5)
        p_i, p_f, p_o = (c.new_zeros(3 * c.shape[0]) if peep is None else peep).chunk(3)
        a_i, a_f = a_i + p_i * c, a_f + p_f * c
        c = torch.sigmoid(a_f) * c + torch.sigmoid(a_i) * torch.tanh(a_g)
        a_o = a_o + p_o * c
        c_out = c
        if cell == "lnlstm":
            c_out = ln(c, p[f"weight_ln_c_l{sfx}"], p[f"bias_ln_c_l{sfx}"])
        h = torch.sigmoid(a_o) * torch.tanh(c_out)
        w_hr = p.get(f"weight_hr_l{sfx}")
        return (h if w_hr is None else w_hr @ h), c
    if cell in ("gru", "lngru"):
        i_r, i_z, i_n = gi.chunk(3)
        h_r, h_z, h_n = gh.chunk(3)
        r, z = torch.sigmoid(i_r + h_r), torch.sigmoid(i_z + h_z)
        n = torch.tanh(i_n + r * h_n)
        return (1 - z) * n + z * h, None
    return (torch.relu if cell == "rnn_relu" else torch.tanh)(gi + gh), None


def reference(module, cell, x, lengths, weight_masks, locked_masks):
    """(B, T, D*W) outputs and final states for batch-first `x` from zero states.

    W_hh of layer-direction k is W_hh ⊙ weight_masks[k] (already scaled) where k
    has one; locked_masks[layer] (B, F) multiplies every step of the output of
    `layer` before the next layer reads it (and, with residual, adds it).
    """
    p = dict(module.named_parameters())
    num_dirs = 2 if module.bidirectional else 1
    batch, steps = x.shape[0], x.shape[1]
    lengths = [steps] * batch if lengths is None else lengths.tolist()
    widths = module._kernel_state_sizes()
    rows = module.num_layers * num_dirs
    finals = [[[None] * batch for _ in range(rows)] for _ in widths]
    inp = x
    for layer in range(module.num_layers):
        outs = []
        for d in range(num_dirs):
            k = layer * num_dirs + d
            sfx = f"{layer}_reverse" if d else f"{layer}"
            w_hh = p[f"weight_hh_l{sfx}"]
            if weight_masks.get(k) is not None:
                w_hh = w_hh * weight_masks[k]
            per_seq = []
            for b in range(batch):
                h = x.new_zeros(widths[0])
                c = x.new_zeros(widths[-1]) if len(widths) > 1 else None
                col = [x.new_zeros(widths[0])] * steps
                order = range(lengths[b])
                for t in reversed(order) if d else order:
                    h, c = step(cell, p, sfx, w_hh, inp[b, t], h, c)
                    col[t] = h
                finals[0][k][b] = h
                if c is not None:
                    finals[1][k][b] = c
                per_seq.append(torch.stack(col))
            outs.append(torch.stack(per_seq))
        out = torch.cat(outs, -1)
        inp = out + inp if module.residual and layer > 0 else out
        if locked_masks.get(layer) is not None:
            inp = inp * locked_masks[layer].unsqueeze(1)
    return inp, [torch.stack([torch.stack(r) for r in f]) for f in finals]


# ---------------------------------------------------------------------------------
# The module, in each input form
# ---------------------------------------------------------------------------------


def inputs(form, batch=3, steps=5, seed=1):
    torch.manual_seed(seed)
    batch = 1 if form == "unbatched" else batch
    x = torch.randn(batch, steps, N_IN, dtype=torch.float64, requires_grad=True)
    lengths = None
    if form in ("lengths", "packed"):  # unsorted, with 1 and T
        lengths = torch.tensor([[3, 5, 1, 4, 2][i % 5] for i in range(batch)])
    return x, lengths


def run(module, form, x, lengths):
    """Batch-first (B, T, D*W) outputs and the final states as a list."""
    steps = x.shape[1]
    if form == "unbatched":
        out, final = module(x[0])
        final = final if isinstance(final, tuple) else (final,)
        return out.unsqueeze(0), [s.unsqueeze(1) for s in final]
    inp = x if module.batch_first else x.transpose(0, 1)
    if form == "padded":
        out, final = module(inp)
    elif form == "lengths":
        out, final = module(inp, lengths=lengths)
    else:
        packed = nn.utils.rnn.pack_padded_sequence(
            inp, lengths, batch_first=module.batch_first, enforce_sorted=False
        )
        out, final = module(packed)
        out, _ = nn.utils.rnn.pad_packed_sequence(
            out, batch_first=module.batch_first, total_length=steps
        )
    out = out if module.batch_first else out.transpose(0, 1)
    return out, list(final) if isinstance(final, tuple) else [final]


def outputs_and_grads(module, result, x):
    """The outputs and final states `result` as one list, and the gradients of a
    fixed random loss of them: of x, then of every parameter (None where unused)."""
    outputs = [result[0], *result[1]]
    gen = torch.Generator().manual_seed(2)
    loss = sum(
        (t * torch.randn(t.shape, generator=gen, dtype=t.dtype)).sum() for t in outputs
    )
    leaves = [x, *module.parameters()]
    return outputs, torch.autograd.grad(loss, leaves, allow_unused=True)


def assert_all_close(module, got, want, **tol):
    """Two (outputs, grads) pairs from `outputs_and_grads` agree, named."""
    for g, w in zip(got[0], want[0], strict=True):
        torch.testing.assert_close(g, w, **tol)
    names = ["x"] + [n for n, _ in module.named_parameters()]
    for name, g, w in zip(names, got[1], want[1], strict=True):
        assert (g is None) == (w is None), name
        if g is not None:
            torch.testing.assert_close(g, w, msg=lambda m, n=name: f"{n}: {m}", **tol)


def module_with_masks(module, form, x, lengths):
    """The module's outputs and gradients in training, and the masks it drew."""
    with recorded_weight_masks(module) as weights, recorded_locked_masks(module) as lk:
        got = outputs_and_grads(module, run(module, form, x, lengths), x)
    return got, weights, lk


# ---------------------------------------------------------------------------------
# Against the reference
# ---------------------------------------------------------------------------------


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("cell,impl", CASES)
def test_training_matches_the_equations_with_the_masks_drawn(cell, impl, config):
    layers, bidir, batch_first, residual, form, p_w, p_locked = CONFIGS[config]
    module = build(cell, impl, layers, bidir, batch_first, residual, p_w, p_locked)
    module.train()
    x, lengths = inputs(form)
    got, weights, locked = module_with_masks(module, form, x, lengths)
    dirs = 2 if bidir else 1
    assert [k for k, _ in weights] == list(range(layers * dirs))
    assert all((m is None) == (p_w == 0) for _, m in weights)
    expected_locked = list(range(layers - 1)) if p_locked else []
    assert [layer for layer, _ in locked] == expected_locked
    want = outputs_and_grads(
        module, reference(module, cell, x, lengths, dict(weights), dict(locked)), x
    )
    assert_all_close(module, got, want)
    if p_w:  # the raw weight's gradient comes through the mask: 0 where dropped
        names = [n for n, _ in module.named_parameters()]
        grad, mask = got[1][1 + names.index("weight_hh_l0")], weights[0][1]
        assert (grad[mask == 0] == 0).all() and (grad[mask != 0] != 0).any()


@pytest.mark.parametrize("form", ("packed", "lengths"))
@pytest.mark.parametrize(
    "cell,impl", [(c, "custom") for c in LSTMS] + [("lstm", "torch")]
)
def test_training_with_proj_matches_the_equations(cell, impl, form):
    """h is P wide, so the weight mask is (4H, P) and layer k >= 1 reads D*P."""
    module = build(cell, impl, 3, True, True, True, 0.5, 0.4, proj=PROJ).train()
    x, lengths = inputs(form)
    got, weights, locked = module_with_masks(module, form, x, lengths)
    assert all(m.shape == (4 * HID, PROJ) for _, m in weights)
    assert all(m.shape == (3, 2 * PROJ) for _, m in locked)
    want = outputs_and_grads(
        module, reference(module, cell, x, lengths, dict(weights), dict(locked)), x
    )
    assert_all_close(module, got, want)


@pytest.mark.parametrize("form", ("padded", "lengths", "packed"))
@pytest.mark.parametrize("cell", ("rnn_relu", "gru", "lstm", "lstm-proj"))
def test_both_kernels_draw_the_same_masks_and_agree(cell, form):
    """Under the same seed torch's kernel (a layer at a time), ours and impl auto
    draw the same masks in the same order, so they compute the same thing."""
    proj = PROJ if cell == "lstm-proj" else 0
    cell = cell.removesuffix("-proj")
    x, lengths = inputs(form, batch=4)
    results = []
    for impl in ("custom", "torch", "auto"):
        module = build(cell, impl, 3, True, False, True, 0.5, 0.3, proj=proj).train()
        if impl == "torch":  # really torch's kernel
            module._kernel_stack = None
        torch.manual_seed(7)
        results.append(outputs_and_grads(module, run(module, form, x, lengths), x))
    assert_all_close(module, results[1], results[0])
    assert_all_close(module, results[2], results[0])


@pytest.mark.parametrize("impl", ("custom", "torch"))
@pytest.mark.parametrize("cell", ("gru", "lstm"))
def test_gradcheck_with_the_masks_fixed_by_a_seed(cell, impl):
    """Numerical gradients of the input and of a dropped W_hh, each call drawing the
    same masks (the seed is set inside the function)."""
    module = build(cell, impl, 2, True, True, True, 0.5, 0.4).train()
    names = ["weight_hh_l0", "weight_hh_l1_reverse"]
    params = [getattr(module, n).detach().clone().requires_grad_() for n in names]
    torch.manual_seed(3)
    x = torch.randn(3, 4, N_IN, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([2, 4, 3])

    def f(x, *params):
        torch.manual_seed(5)
        out, state = torch.func.functional_call(
            module, dict(zip(names, params)), (x,), {"lengths": lengths}
        )
        state = state if isinstance(state, tuple) else (state,)
        return (out, *state)

    assert torch.autograd.gradcheck(f, (x, *params))


# ---------------------------------------------------------------------------------
# Eval: the identity
# ---------------------------------------------------------------------------------


@pytest.mark.parametrize("form", ("padded", "lengths", "packed", "unbatched"))
@pytest.mark.parametrize("cell,impl", CASES + [(c, "auto") for c in TORCH_CELLS])
def test_eval_is_the_same_module_without_the_options(cell, impl, form):
    module = build(cell, impl, 3, True, True, True, 0.5, 0.4).eval()
    plain = build(cell, impl, 3, True, True, True, 0.0, 0.0).eval()
    assert module.weight_drop == 0.5 and module.locked_dropout
    for (name, a), (other, b) in zip(
        module.state_dict().items(), plain.state_dict().items(), strict=True
    ):
        assert name == other and torch.equal(a, b)
    x, lengths = inputs(form)
    with recorded_weight_masks(module) as weights, recorded_locked_masks(module) as lk:
        out, final = run(module, form, x, lengths)
    assert all(m is None for _, m in weights) and lk == []
    plain_out, plain_final = run(plain, form, x, lengths)
    for a, b in zip([out, *final], [plain_out, *plain_final], strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("impl", ("custom", "auto"))
def test_eval_with_recurrent_dropout_alone_is_the_same_module_without_it(impl):
    """The identity in eval, so impl auto may take torch's kernel for it then."""
    torch.manual_seed(0)
    module = CustomLSTM(N_IN, HID, 2, impl=impl, recurrent_dropout=0.5).eval()
    torch.manual_seed(0)
    plain = CustomLSTM(N_IN, HID, 2, impl=impl).eval()
    x = torch.randn(5, 3, N_IN)
    assert module._kernel_defers_to_torch(x, None) is (impl == "auto")
    out, (h, c) = module(x)
    plain_out, (plain_h, plain_c) = plain(x)
    assert torch.equal(out, plain_out) and torch.equal(h, plain_h)
    assert torch.equal(c, plain_c)


@pytest.mark.parametrize(
    "options,training,expected",
    [
        ({"weight_drop": 0.5}, True, True),
        ({"dropout": 0.3, "locked_dropout": True}, True, True),
        ({"weight_drop": 0.5, "dropout": 0.3, "locked_dropout": True}, False, True),
        ({"recurrent_dropout": 0.3}, True, False),
        ({"recurrent_dropout": 0.3}, False, True),
        ({"zoneout": 0.3}, False, False),
        ({"weight_drop": 0.5, "zoneout": 0.3}, True, False),
    ],
)
def test_impl_auto_takes_torchs_kernel_unless_the_step_changes(
    options, training, expected
):
    module = CustomLSTM(N_IN, HID, 2, impl="auto", **options).train(training)
    x = torch.randn(4, 2, N_IN)
    assert module._kernel_defers_to_torch(x, None) is expected
    assert module._kernel_defers_to_torch(x, torch.tensor([4, 3])) is False  # CPU


# ---------------------------------------------------------------------------------
# The masks: shapes, sharing, rates
# ---------------------------------------------------------------------------------


@pytest.mark.parametrize("impl", ("custom", "torch"))
def test_weight_mask_is_one_per_layer_direction_per_call(impl):
    """One (4H, H) mask M/(1-P) per layer-direction per forward call (the shape of
    W_hh, not of the batch), drawn anew at each call."""
    module = build("lstm", impl, 2, True, True, False, 0.25, 0.0, hidden=8).train()
    x, _ = inputs("padded", batch=6)
    calls = []
    for _ in range(2):
        with recorded_weight_masks(module) as weights:
            module(x)
        calls.append(weights)
    for weights in calls:
        assert [k for k, _ in weights] == [0, 1, 2, 3]
        for k, mask in weights:
            sfx = f"{k // 2}_reverse" if k % 2 else f"{k // 2}"
            assert mask.shape == getattr(module, f"weight_hh_l{sfx}").shape
            assert set(mask.unique().tolist()) == {0.0, 1 / (1 - 0.25)}
    for (_, first), (_, second) in zip(calls[0], calls[1], strict=True):
        assert not torch.equal(first, second)
    for (_, a), (_, b) in zip(calls[0], calls[0][1:]):
        assert not torch.equal(a, b)  # each layer-direction its own


@pytest.mark.parametrize("impl", ("custom", "torch"))
@pytest.mark.parametrize("cell", ("gru", "lstm"))
def test_weight_mask_is_shared_by_the_whole_batch(cell, impl):
    """A batch of one sequence repeated gives one output repeated: every sequence
    and every step sees the same dropped W_hh (a mask per row would differ)."""
    module = build(cell, impl, 2, True, True, False, 0.5, 0.0).train()
    x = torch.randn(1, 5, N_IN, dtype=torch.float64).expand(6, -1, -1)
    out, _ = module(x)
    for b in range(1, 6):  # to rounding: BLAS may round rows differently
        torch.testing.assert_close(out[b], out[0], rtol=1e-13, atol=1e-13)
    again, _ = module(x)
    expected, _ = module.eval()(x)
    assert not torch.allclose(out[0], again[0]) and not torch.allclose(out, expected)


def test_locked_mask_is_the_same_at_every_step_of_a_sequence():
    """What layer 1 reads is layer 0's output times the recorded (B, D*H) mask,
    the same at every step; the rows differ between sequences and calls."""
    module = build("lstm", "custom", 2, True, False, False, 0.0, 0.5, hidden=8)
    steps, batch = 6, 5
    x = torch.randn(steps, batch, N_IN, dtype=torch.float64)
    seen = {}
    layer = module._kernel_layer

    def record(x, k, *args):
        out, states = layer(x, k, *args)
        seen[k] = (x, out)
        return out, states

    module._kernel_layer = record
    masks = []
    for _ in range(2):
        with recorded_locked_masks(module) as locked:
            module(x)
        assert [layer for layer, _ in locked] == [0]
        masks.append(locked[0][1])
        out0 = torch.cat([seen[0][1], seen[1][1]], 1).view(steps, batch, 16)
        read = seen[2][0].view(steps, batch, 16)
        mask = masks[-1]
        assert mask.shape == (batch, 16)
        assert torch.equal(read == 0, (mask == 0).expand(steps, -1, -1))
        torch.testing.assert_close(read, out0 * mask, rtol=1e-15, atol=0)
    assert not torch.equal(masks[0], masks[1])
    rows = masks[0].unbind()
    assert all(not torch.equal(a, b) for i, a in enumerate(rows) for b in rows[i + 1 :])


def test_drop_rates():
    """The fraction dropped is P (16384 draws each: 5 standard deviations is
    0.018), the kept values are 1/(1-P) exactly."""
    p = 0.3
    torch.manual_seed(4)
    module = CustomLSTM(N_IN, 64, 2, dropout=p, bidirectional=True, weight_drop=p)
    module.locked_dropout = True
    with recorded_weight_masks(module) as weights, recorded_locked_masks(module) as lk:
        module(torch.randn(1, 128, N_IN))
    for mask in [weights[0][1], lk[0][1]]:
        assert mask.numel() == 16384
        assert abs((mask == 0).double().mean().item() - p) < 0.018
        assert torch.equal(
            mask[mask != 0], torch.full_like(mask[mask != 0], 1 / (1 - p))
        )


# ---------------------------------------------------------------------------------
# The parameters: torch's, never swapped
# ---------------------------------------------------------------------------------


@pytest.mark.parametrize("impl", ("custom", "torch"))
def test_no_parameter_is_swapped_and_the_state_dict_is_torchs(impl):
    """Unlike AWD's WeightDrop, the registered weight_hh_l{k} stay the same objects
    with the same values (no `_raw` copy), get the gradient, and torch's state
    dict loads as is."""
    module = build("lstm", impl, 2, True, True, False, 0.5, 0.4).train()
    torch.manual_seed(0)
    theirs = nn.LSTM(N_IN, HID, 2, batch_first=True, dropout=0.4, bidirectional=True)
    assert list(module.state_dict()) == list(theirs.state_dict())
    module.load_state_dict(theirs.double().state_dict())
    before = dict(module.named_parameters())
    values = {n: p.detach().clone() for n, p in before.items()}
    flat = list(module._flat_weights)
    x, _ = inputs("padded")
    for _ in range(2):
        out, (h, c) = module(x)
        (out.sum() + h.sum() + c.sum()).backward()
    after = dict(module.named_parameters())
    assert list(after) == list(before)
    assert all(after[n] is before[n] for n in before)
    assert all(a is b for a, b in zip(module._flat_weights, flat, strict=True))
    assert isinstance(module.weight_hh_l0, nn.Parameter)
    assert module.weight_hh_l0 is before["weight_hh_l0"]
    assert all(torch.equal(after[n], values[n]) for n in values)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in after.values())
