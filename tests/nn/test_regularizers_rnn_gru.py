"""`recurrent_dropout` and `zoneout` (design section 9) in the Elman RNN (tanh, relu)
and GRU kernels: the modules against step-by-step loops written from the equations
(one sequence, one step at a time, fed the masks the module drew), in float64 —
outputs, final states and gradients; gradcheck of the Functions with fixed masks;
eval behaviour; the masks' sharing and rates; the plain (TorchScript) path."""

import warnings

import pytest
import torch
from torch import nn
from torch.autograd import gradcheck, gradgradcheck

from rnnspec.nn import CustomGRU, CustomRNN
from rnnspec.nn.gru import GRUKernelFunction, gru_kernel_plain
from rnnspec.nn.kernel import kernel_project
from rnnspec.nn.rnn import RNNKernelFunction, rnn_kernel_plain
from tests.nn.masks import recorded_step_masks

F64 = torch.float64
N_IN, HID, BATCH, STEPS = 3, 4, 4, 5
LENGTHS = torch.tensor([3, 5, 1, 4])  # unsorted on purpose
CELLS = {
    "rnn_tanh": (CustomRNN, {"nonlinearity": "tanh"}),
    "rnn_relu": (CustomRNN, {"nonlinearity": "relu"}),
    "gru": (CustomGRU, {}),
}
OPTIONS = {
    "recurrent_dropout": {"recurrent_dropout": 0.3},
    "zoneout": {"zoneout": 0.4},
    "both": {"recurrent_dropout": 0.3, "zoneout": 0.4},
}


def make(cell, layers=2, bidirectional=True, **kw):
    """A float64 module; the same seed gives the same weights with any options."""
    cls, extra = CELLS[cell]
    torch.manual_seed(0)
    args = dict(num_layers=layers, bidirectional=bidirectional, dtype=F64)
    return cls(N_IN, HID, **args, **extra, **kw)


# ---------------------------------------------------------------------------------
# The reference: the equations, one sequence and one step at a time
# ---------------------------------------------------------------------------------


def reference_step(cell, params, x, h, h_in):
    """h̃_t of one sequence from x_t (I,), the state h_{t-1} (H,) and the matmul's
    input h_in (m ⊙ h_{t-1} with recurrent dropout)."""
    w_ih, w_hh, b_ih, b_hh = params
    gi, gh = w_ih @ x, w_hh @ h_in
    if b_ih is not None:
        gi, gh = gi + b_ih, gh + b_hh
    if cell != "gru":
        act = torch.relu if cell == "rnn_relu" else torch.tanh
        return act(gi + gh)
    r = torch.sigmoid(gi[:HID] + gh[:HID])
    z = torch.sigmoid(gi[HID : 2 * HID] + gh[HID : 2 * HID])
    n = torch.tanh(gi[2 * HID :] + r * gh[2 * HID :])
    return (1 - z) * n + z * h  # z ⊙ h_{t-1}: the state itself, never masked


def reference(module, cell, x, h0, lengths, masks):
    """(T, B, D*H) outputs (zeros past each length) and (L*D, B, H) final states.

    x is (T, B, I); masks[k] = [rec (B, H) or None, zone (T, B, H) or None, _] per
    layer-direction k, sequences in the caller's order (as drawn), zone at absolute
    time t for both directions."""
    dirs = 2 if module.bidirectional else 1
    inp, finals = x, []
    for layer in range(module.num_layers):
        outs = []
        for direction in range(dirs):
            k = layer * dirs + direction
            suffix = f"_l{layer}" + ("_reverse" if direction else "")
            params = [
                getattr(module, name + suffix, None)
                for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
            ]
            rec, zone = masks[k][0], masks[k][1]
            out = [[x.new_zeros(HID) for _ in range(BATCH)] for _ in range(STEPS)]
            final = []
            for b in range(BATCH):
                n = int(lengths[b])
                h = h0[k, b]
                for t in reversed(range(n)) if direction else range(n):
                    h_in = h if rec is None else rec[b] * h
                    h_new = reference_step(cell, params, inp[t, b], h, h_in)
                    if zone is not None:
                        h_new = zone[t, b] * h + (1 - zone[t, b]) * h_new
                    h = out[t][b] = h_new
                final.append(h)
            outs.append(torch.stack([torch.stack(row) for row in out]))
            finals.append(torch.stack(final))
        inp = torch.cat(outs, 2)
    return inp, torch.stack(finals)


def value_and_grads(forward, inputs):
    """Outputs and the gradients of `inputs` of a fixed random linear loss."""
    outputs = forward()
    gen = torch.Generator().manual_seed(3)
    weights = [torch.randn(o.shape, generator=gen, dtype=o.dtype) for o in outputs]
    loss = sum((o * w).sum() for o, w in zip(outputs, weights, strict=True))
    return [o.detach() for o in outputs], torch.autograd.grad(loss, inputs)


def check_against_reference(module, cell, lengths, batch_first=False, masks=None):
    """Forward and backward of `module` equal the reference's, with `masks` or else
    the masks the module drew; returns what the module drew (recorded)."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(STEPS, BATCH, N_IN, generator=gen, dtype=F64).requires_grad_()
    dirs = 2 if module.bidirectional else 1
    rows = module.num_layers * dirs
    h0 = torch.randn(rows, BATCH, HID, generator=gen, dtype=F64).requires_grad_()
    inputs = [x, h0, *module.parameters()]
    found = []

    def ours():
        with recorded_step_masks(module) as masks:
            xs = x.transpose(0, 1) if batch_first else x
            out, h_n = module(xs, h0, lengths=lengths)
        found.extend(masks)
        return out.transpose(0, 1) if batch_first else out, h_n

    full = torch.full((BATCH,), STEPS) if lengths is None else lengths
    got = value_and_grads(ours, inputs)
    expected = value_and_grads(
        lambda: reference(module, cell, x, h0, full, found if masks is None else masks),
        inputs,
    )
    for a, b in zip(got[0] + list(got[1]), expected[0] + list(expected[1])):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-10)
    return found


@pytest.mark.parametrize("packed", [False, True])
@pytest.mark.parametrize("option", sorted(OPTIONS))
@pytest.mark.parametrize("cell", sorted(CELLS))
def test_matches_reference_in_training(cell, option, packed):
    module = make(cell, **OPTIONS[option]).train()
    torch.manual_seed(5)
    found = check_against_reference(module, cell, LENGTHS if packed else None)
    assert len(found) == 4  # layers 2 x directions 2, each its own masks
    for rec, zone, cell_zone in found:
        assert cell_zone is None  # no cell state
        assert (rec is None) == ("recurrent_dropout" not in OPTIONS[option])
        assert (zone is None) == ("zoneout" not in OPTIONS[option])
        if rec is not None:
            assert rec.shape == (BATCH, HID)
        if zone is not None:
            assert zone.shape == (STEPS, BATCH, HID)


@pytest.mark.parametrize("cell", ["rnn_relu", "gru"])
def test_matches_reference_without_bias_batch_first_one_direction(cell):
    kw = dict(bias=False, batch_first=True, **OPTIONS["both"])
    module = make(cell, layers=2, bidirectional=False, **kw).train()
    torch.manual_seed(6)
    check_against_reference(module, cell, LENGTHS, batch_first=True)


@pytest.mark.parametrize("cell", sorted(CELLS))
def test_packed_sequence_input_draws_and_applies_the_same_masks(cell):
    """A PackedSequence (its own sorted_indices) gives what lengths= gives."""
    module = make(cell, **OPTIONS["both"]).train()
    x = torch.randn(STEPS, BATCH, N_IN, dtype=F64)
    torch.manual_seed(7)
    out, h_n = module(x, lengths=LENGTHS)
    packed = nn.utils.rnn.pack_padded_sequence(x, LENGTHS, enforce_sorted=False)
    torch.manual_seed(7)
    p_out, p_hn = module(packed)
    p_out = nn.utils.rnn.pad_packed_sequence(p_out, total_length=STEPS)[0]
    torch.testing.assert_close(p_out, out, atol=1e-14, rtol=0)
    torch.testing.assert_close(p_hn, h_n, atol=1e-14, rtol=0)


# ---------------------------------------------------------------------------------
# Eval: recurrent dropout is the identity, zoneout its expectation
# ---------------------------------------------------------------------------------


@pytest.mark.parametrize("cell", sorted(CELLS))
def test_recurrent_dropout_is_the_identity_in_eval(cell):
    x = torch.randn(STEPS, BATCH, N_IN, dtype=F64)
    plain = make(cell).eval()
    dropped = make(cell, recurrent_dropout=0.5).eval()
    for lengths in (None, LENGTHS):
        a, b = dropped(x, lengths=lengths), plain(x, lengths=lengths)
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.allclose(dropped.train()(x)[0], b[0])  # ... but not in training


@pytest.mark.parametrize("packed", [False, True])
@pytest.mark.parametrize("option", ["zoneout", "both"])
@pytest.mark.parametrize("cell", sorted(CELLS))
def test_zoneout_in_eval_is_its_expectation(cell, option, packed):
    """Eval: h_t = P h_{t-1} + (1 - P) h̃_t (the reference with d = P), with
    gradients; recurrent dropout (in "both") is off."""
    module = make(cell, **OPTIONS[option]).eval()
    rate = torch.full((STEPS, BATCH, HID), 0.4, dtype=F64)
    lengths = LENGTHS if packed else None
    found = check_against_reference(module, cell, lengths, masks=[[None, rate]] * 4)
    assert found == [[None, None, None]] * 4  # nothing drawn in eval
    x = torch.randn(STEPS, BATCH, N_IN, dtype=F64)
    with torch.no_grad():
        got = module(x, lengths=lengths)[0]
        assert not torch.allclose(got, make(cell).eval()(x, lengths=lengths)[0])


# ---------------------------------------------------------------------------------
# The masks: shared over steps, per sequence, the rates drawn
# ---------------------------------------------------------------------------------


def test_recurrent_mask_is_one_per_sequence_for_all_steps():
    """h_t = relu(W_hh (m ⊙ h_{t-1})) with W_ih = 0, W_hh = I and h_0 = 1 is m^t
    exactly (m in {0, 2}): the recorded (B, H) mask of each direction is applied,
    unchanged, at every step; it differs between sequences and between calls."""
    module = CustomRNN(
        HID, 16, nonlinearity="relu", bias=False, bidirectional=True, dtype=F64,
        recurrent_dropout=0.5,
    ).train()  # fmt: skip
    with torch.no_grad():
        for suffix in ("_l0", "_l0_reverse"):
            getattr(module, "weight_ih" + suffix).zero_()
            getattr(module, "weight_hh" + suffix).copy_(torch.eye(16))
    batch, steps = 6, 4
    x = torch.randn(steps, batch, HID, dtype=F64)
    h0 = torch.ones(2, batch, 16, dtype=F64)
    torch.manual_seed(0)
    with recorded_step_masks(module) as found:
        out = module(x, h0)[0]
    (fwd, *_), (bwd, *_) = found
    for t in range(steps):
        assert torch.equal(out[t, :, :16], fwd ** (t + 1))
        assert torch.equal(out[t, :, 16:], bwd ** (steps - t))
    assert len({tuple(row.tolist()) for row in fwd}) > 1  # per sequence
    assert not torch.equal(fwd, bwd)  # per direction
    with recorded_step_masks(module) as again:
        module(x, h0)
    assert not torch.equal(again[0][0], fwd)  # per call


@pytest.mark.parametrize("cell", sorted(CELLS))
def test_zoneout_keeps_the_previous_value_exactly(cell):
    """Where d = 1 the unit is exactly h_{t-1} (the zoned state, which the next
    step reads); where d = 0 it is the new value."""
    module = make(cell, layers=1, bidirectional=False, zoneout=0.5).train()
    x = torch.randn(STEPS, BATCH, N_IN, dtype=F64)
    h0 = torch.randn(1, BATCH, HID, dtype=F64)
    torch.manual_seed(2)
    with torch.no_grad(), recorded_step_masks(module) as found:
        out, h_n = module(x, h0)
    zone = found[0][1].bool()  # (T, B, H)
    prev = torch.cat([h0, out[:-1]])
    assert torch.equal(out[zone], prev[zone])
    moved = ~zone & ((out != 0) | (prev != 0))  # relu: 0 may follow 0
    assert not torch.isclose(out[moved], prev[moved]).any()
    assert torch.equal(h_n[0], out[-1])
    assert 0 < zone.sum() < zone.numel()


def test_drawn_rates():
    """Rates within 3 sigma over one big draw; kept recurrent units are 1/(1-P)."""
    module = CustomGRU(2, 64, recurrent_dropout=0.3, zoneout=0.2).train()
    torch.manual_seed(4)
    with torch.no_grad(), recorded_step_masks(module) as found:
        module(torch.randn(3, 500, 2))
    rec, zone = found[0][0], found[0][1]
    for p, dropped in ((0.3, rec == 0), (0.2, zone == 1)):
        n = dropped.numel()
        assert abs(dropped.double().mean().item() - p) < 3 * (p * (1 - p) / n) ** 0.5
    assert torch.equal(zone, zone.round())  # 0/1
    kept = rec[rec != 0]
    torch.testing.assert_close(kept, torch.full_like(kept, 1 / 0.7))


# ---------------------------------------------------------------------------------
# The Functions: gradcheck with fixed masks; the plain path gives the same numbers
# ---------------------------------------------------------------------------------

BATCH_SIZES = [4, 3, 3, 1]
# 40 steps: the backward's spans (a sixteenth of the rows) hold several steps
LONG_BATCH_SIZES = [4] * 15 + [3] * 15 + [1] * 10


def function_case(cell, masks, reverse, batch_sizes=BATCH_SIZES):
    """(apply, plain, tensor inputs) of one layer-direction over packed rows, with
    fixed masks: training ones (0/1 zones, a scaled rec mask) or eval's rate."""
    gen = torch.Generator().manual_seed(9)

    def rand(*shape):
        return torch.randn(*shape, generator=gen, dtype=F64).requires_grad_()

    rows, gates = sum(batch_sizes), 3 * HID if cell == "gru" else HID
    rec = zone = None
    if masks in ("recurrent_dropout", "both"):
        rec = torch.bernoulli(torch.full((4, HID), 0.6, dtype=F64), generator=gen) / 0.6
    if masks in ("zoneout", "both"):
        zone = torch.bernoulli(torch.full((rows, HID), 0.5, dtype=F64), generator=gen)
    if masks == "eval_zoneout":
        zone = torch.full((1, 1), 0.3, dtype=F64).expand(rows, HID)
    x, w_ih, b_ih, w_hh = (
        rand(rows, N_IN),
        rand(gates, N_IN),
        rand(gates),
        rand(gates, HID),
    )
    h0 = rand(4, HID)
    if cell == "gru":
        extra = (batch_sizes, reverse)
        inputs = (x, w_ih, b_ih, w_hh, rand(gates), h0)
        return (
            lambda *t: GRUKernelFunction.apply(*t, *extra, rec, zone),
            lambda x, w_ih, b_ih, *t: gru_kernel_plain(
                kernel_project(x, w_ih, b_ih), *t, *extra, rec, zone
            ),
            inputs,
        )
    extra = (batch_sizes, reverse, cell == "rnn_relu")
    return (
        lambda *t: RNNKernelFunction.apply(*t, *extra, rec, zone),
        lambda x, w_ih, b_ih, *t: rnn_kernel_plain(
            kernel_project(x, w_ih, b_ih), *t, *extra, rec, zone
        ),
        (x, w_ih, b_ih, w_hh, h0),
    )


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize(
    "masks", ["recurrent_dropout", "zoneout", "both", "eval_zoneout"]
)
@pytest.mark.parametrize("cell", sorted(CELLS))
def test_function_gradcheck_and_plain_path(cell, masks, reverse):
    apply, plain, inputs = function_case(cell, masks, reverse)
    assert gradcheck(apply, inputs)
    got = value_and_grads(lambda: apply(*inputs), inputs)
    expected = value_and_grads(lambda: plain(*inputs), inputs)
    for a, b in zip(got[0], expected[0]):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-12)
    for a, b in zip(got[1], expected[1]):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("masks", ["none", "both"])
@pytest.mark.parametrize("cell", sorted(CELLS))
def test_function_over_many_steps(cell, masks, reverse):
    """Spans of several steps each: gradcheck, and the plain path's numbers."""
    apply, plain, inputs = function_case(cell, masks, reverse, LONG_BATCH_SIZES)
    assert gradcheck(apply, inputs)
    got = value_and_grads(lambda: apply(*inputs), inputs)
    expected = value_and_grads(lambda: plain(*inputs), inputs)
    for a, b in zip([*got[0], *got[1]], [*expected[0], *expected[1]], strict=True):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("cell", ["rnn_tanh", "gru"])
def test_function_gradgradcheck(cell):
    """Double backward differentiates the plain steps, masks included."""
    apply, _, inputs = function_case(cell, "both", True)
    assert gradgradcheck(apply, inputs)


@pytest.mark.parametrize("cell", sorted(CELLS))
def test_torchscript_agrees_in_eval_and_training(cell):
    """The scripted module runs the plain steps: the eager Function's numbers,
    in eval (zoneout's rate) and in training (the same seed draws the same masks)."""
    module = make(cell, **OPTIONS["both"])
    scripted = torch.jit.script(module)
    x = torch.randn(STEPS, BATCH, N_IN, dtype=F64)
    for training in (False, True):
        module.train(training), scripted.train(training)
        for lengths in (None, LENGTHS):
            torch.manual_seed(8)
            a = module(x, None, lengths)
            torch.manual_seed(8)
            b = scripted(x, None, lengths)
            torch.testing.assert_close(b, a, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("cell", sorted(CELLS))
def test_empty_batch_runs_the_plain_steps(cell):
    module = make(cell, **OPTIONS["both"]).train()
    x = torch.randn(STEPS, 0, N_IN, dtype=F64, requires_grad=True)
    out, h_n = module(x)
    assert out.shape == (STEPS, 0, 2 * HID) and h_n.shape == (4, 0, HID)
    out.sum().backward()
    assert x.grad.shape == x.shape


@pytest.mark.parametrize("cell", sorted(CELLS))
def test_eval_zoneout_exports(cell):
    """torch.export and ONNX (in onnxruntime) of the eval module: zoneout's blend
    (lerp by the rate) exports with the plain steps, outputs equal to eager."""
    pytest.importorskip("onnxscript", reason="torch.onnx.export needs onnxscript")
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
    module = make(cell, **OPTIONS["both"]).float().eval()
    x = torch.randn(STEPS, BATCH, N_IN)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch: _flat_weights assigned in export
        want = module(x)
        exported = torch.export.export(module, (x,)).module()
        for got, expected in zip(exported(x), want):
            torch.testing.assert_close(got, expected)
        program = torch.onnx.export(module, (x,), dynamo=True, verbose=False)
    session = ort.InferenceSession(
        program.model_proto.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    for got, expected in zip(session.run(None, {"input": x.numpy()}), want):
        torch.testing.assert_close(torch.from_numpy(got), expected)
