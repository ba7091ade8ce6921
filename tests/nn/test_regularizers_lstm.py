"""Issue 14: recurrent dropout and zoneout inside the LSTM and peephole LSTM kernels.

The modules (our fused kernels through KernelStackBase) against a plain loop written
from the equations of design section 9 (per sequence, padded, step by step), fed the
masks the module drew (`recorded_step_masks`): outputs, final states and the
gradients of the input, every weight and the initial states, in float64, padded and
packed (unsorted lengths), 2 layers, 2 directions, with proj and peepholes, each
option alone and together. The Functions pass gradcheck with fixed masks and, once,
gradgradcheck; their plain steps (TorchScript, export, double backward) agree with
them. In eval recurrent dropout is the identity and zoneout blends by its rate.
"""

import pytest
import torch
from torch.autograd import gradcheck, gradgradcheck

from rnnspec.nn.kernel import kernel_project
from rnnspec.nn.lstm import CustomLSTM, LSTMKernelFunction, lstm_kernel_plain
from rnnspec.nn.peephole import (
    PeepholeKernelFunction,
    PeepholeLSTM,
    peephole_kernel_plain,
)
from tests.nn.masks import recorded_step_masks

F64 = torch.float64
N_IN, HID, PROJ = 3, 5, 2
BATCH, STEPS = 4, 6
LENGTHS = torch.tensor([4, 6, 1, 3])  # unsorted on purpose

OPTIONS = {
    "recurrent_dropout": dict(recurrent_dropout=0.4),
    "zoneout": dict(zoneout=0.3),
    "zoneout_h_only": dict(zoneout=0.3, zoneout_cell=0.0),
    "zoneout_c_only": dict(zoneout_cell=0.5),
    "both": dict(recurrent_dropout=0.4, zoneout=0.3, zoneout_cell=0.2),
}
CELLS = {
    "lstm": (CustomLSTM, {}),
    "lstm_proj": (CustomLSTM, dict(proj_size=PROJ)),
    "peephole": (PeepholeLSTM, {}),
    "peephole_proj": (PeepholeLSTM, dict(proj_size=PROJ)),
}


def make(cell, options, layers=2, bidirectional=True):
    cls, kw = CELLS[cell]
    module = cls(
        N_IN,
        HID,
        layers,
        batch_first=True,
        bidirectional=bidirectional,
        **kw,
        **options,
    )
    return module.to(F64)


def layer_weights(module, k):
    """w_ih, b_ih, w_hh, b_hh, peepholes or None, w_hr or None of layer-direction k."""
    s = f"_l{k // 2}" + ("_reverse" if k % 2 else "")
    if not module.bidirectional:
        s = f"_l{k}"

    def get(name):
        return getattr(module, name + s, None)

    return [get(n) for n in ("weight_ih", "bias_ih", "weight_hh", "bias_hh")] + [
        get("weight_ch"),
        get("weight_hr"),
    ]


def reference_direction(weights, x, length, h, c, masks, reverse):
    """One sequence, one direction, from the equations: (T', W) outputs and the
    final (h, c). masks: rec (W,) or None, zone_h (T, W), zone_c (T, H) or None."""
    w_ih, b_ih, w_hh, b_hh, peep, w_hr = weights
    rec, zone_h, zone_c = masks
    outs = [None] * length
    times = range(length - 1, -1, -1) if reverse else range(length)
    for t in times:
        h_in = h if rec is None else rec * h
        a = w_ih @ x[t] + b_ih + w_hh @ h_in + b_hh
        a_i, a_f, a_g, a_o = a.chunk(4)
        if peep is not None:
            p_i, p_f, p_o = peep.chunk(3)
            a_i, a_f = a_i + p_i * c, a_f + p_f * c
        i, f, g = torch.sigmoid(a_i), torch.sigmoid(a_f), torch.tanh(a_g)
        c_new = f * c + i * g
        if peep is not None:
            a_o = a_o + p_o * c_new
        h_new = torch.sigmoid(a_o) * torch.tanh(c_new)
        if w_hr is not None:
            h_new = w_hr @ h_new
        if zone_c is not None:
            c_new = zone_c[t] * c + (1 - zone_c[t]) * c_new
        if zone_h is not None:
            h_new = zone_h[t] * h + (1 - zone_h[t]) * h_new
        h, c = h_new, c_new
        outs[t] = h
    return torch.stack(outs), h, c


def reference(module, x, lengths, h0, c0, masks):
    """The stack from the equations: (B, T, D*W) outputs (zero past each length)
    and the final (L*D, B, ·) states. masks[k]: [rec (B, W), zone_h (T, B, W),
    zone_c (T, B, H)] of layer-direction k, None where off; in eval zoneout uses
    its rates."""
    dirs = 2 if module.bidirectional else 1
    batch, steps = x.shape[0], x.shape[1]
    lengths = [steps] * batch if lengths is None else lengths.tolist()
    h_n, c_n = [], []
    data = x
    for layer in range(module.num_layers):
        outs = []
        for d in range(dirs):
            k = layer * dirs + d
            rec, zone_h, zone_c = masks[k] if masks else (None, None, None)
            if not module.training:
                width = h0.shape[2]
                if module.zoneout > 0:
                    zone_h = torch.full(
                        (steps, batch, width), module.zoneout, dtype=F64
                    )
                if module.zoneout_cell > 0:
                    zone_c = torch.full(
                        (steps, batch, HID), module.zoneout_cell, dtype=F64
                    )
            out = torch.zeros(batch, steps, h0.shape[2], dtype=F64)
            hs, cs = [], []
            for b in range(batch):
                seq_masks = (
                    None if rec is None else rec[b],
                    None if zone_h is None else zone_h[:, b],
                    None if zone_c is None else zone_c[:, b],
                )
                o, h, c = reference_direction(
                    layer_weights(module, k),
                    data[b],
                    lengths[b],
                    h0[k, b],
                    c0[k, b],
                    seq_masks,
                    d == 1,
                )
                out = out.index_put((torch.tensor([b]), torch.arange(lengths[b])), o)
                hs.append(h)
                cs.append(c)
            outs.append(out)
            h_n.append(torch.stack(hs))
            c_n.append(torch.stack(cs))
        data = torch.cat(outs, 2)
    return data, torch.stack(h_n), torch.stack(c_n)


def outputs_and_grads(run, module, x, h0, c0, seed=11):
    """The outputs of `run()` and the gradients of a fixed random projection of
    them with respect to x, h0, c0 and every parameter."""
    out, h_n, c_n = run()
    g = torch.Generator().manual_seed(seed)
    loss = sum(
        (t * torch.randn(t.shape, generator=g, dtype=F64)).sum()
        for t in (out, h_n, c_n)
    )
    leaves = [x, h0, c0, *module.parameters()]
    return [out, h_n, c_n, *torch.autograd.grad(loss, leaves)]


def module_vs_reference(module, lengths, seed):
    torch.manual_seed(seed)
    dirs = 2 if module.bidirectional else 1
    rows = module.num_layers * dirs
    width = module.proj_size or HID
    x = torch.randn(BATCH, STEPS, N_IN, dtype=F64, requires_grad=True)
    h0 = torch.randn(rows, BATCH, width, dtype=F64, requires_grad=True)
    c0 = torch.randn(rows, BATCH, HID, dtype=F64, requires_grad=True)
    found = []

    def ours():
        with recorded_step_masks(module) as masks:
            out, (h_n, c_n) = module(x, (h0, c0), lengths=lengths)
        found.extend(masks)
        return out, h_n, c_n

    got = outputs_and_grads(ours, module, x, h0, c0)
    expected = outputs_and_grads(
        lambda: reference(module, x, lengths, h0, c0, found), module, x, h0, c0
    )
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)
    return found


@pytest.mark.parametrize("packed", [False, True])
@pytest.mark.parametrize("option", sorted(OPTIONS))
@pytest.mark.parametrize("cell", sorted(CELLS))
def test_training_matches_reference_loop(cell, option, packed):
    module = make(cell, OPTIONS[option])
    found = module_vs_reference(module, LENGTHS if packed else None, seed=1)
    assert len(found) == 4  # 2 layers x 2 directions, each drew its own masks
    options = OPTIONS[option]
    for masks in found:
        assert (masks[0] is not None) == ("recurrent_dropout" in options)
        assert (masks[1] is not None) == (options.get("zoneout", 0) > 0)
        assert (masks[2] is not None) == (module.zoneout_cell > 0)


@pytest.mark.parametrize("packed", [False, True])
@pytest.mark.parametrize("cell", sorted(CELLS))
def test_eval_zoneout_matches_reference_with_rates(cell, packed):
    """In eval zoneout is its expectation, d = P (c: Q); gradients too."""
    module = make(cell, OPTIONS["both"]).eval()
    found = module_vs_reference(module, LENGTHS if packed else None, seed=2)
    assert found == [[None, None, None]] * 4  # nothing drawn in eval


@pytest.mark.parametrize("cell", sorted(CELLS))
def test_eval_recurrent_dropout_is_the_identity(cell):
    torch.manual_seed(3)
    plain = make(cell, {})
    dropped = make(cell, dict(recurrent_dropout=0.5))
    dropped.load_state_dict(plain.state_dict())
    plain.eval()
    dropped.eval()
    x = torch.randn(BATCH, STEPS, N_IN, dtype=F64)
    for lengths in (None, LENGTHS):
        out, (h_n, c_n) = plain(x, lengths=lengths)
        got, (h_got, c_got) = dropped(x, lengths=lengths)
        assert torch.equal(out, got)
        assert torch.equal(h_n, h_got) and torch.equal(c_n, c_got)


@pytest.mark.parametrize("cell", ["lstm", "peephole"])
def test_one_layer_one_direction_packed(cell):
    module = make(cell, OPTIONS["both"], layers=1, bidirectional=False)
    module_vs_reference(module, LENGTHS, seed=4)


def test_recurrent_mask_is_one_per_sequence_for_all_steps():
    """The recorded (B, W) mask is what every step applies (the reference applies it
    at each step), it differs between sequences and between calls, and its drop
    rate and scale are right."""
    torch.manual_seed(5)
    module = make("lstm", dict(recurrent_dropout=0.5), layers=1, bidirectional=False)
    found = module_vs_reference(module, LENGTHS, seed=5)
    rec = found[0][0]
    assert rec.shape == (BATCH, HID)
    big = CustomLSTM(4, 64, recurrent_dropout=0.25, batch_first=True)
    x = torch.randn(256, 2, 4)
    with recorded_step_masks(big) as masks:
        big(x)
        big(x)
    first, second = masks[0][0], masks[1][0]
    assert first.shape == (256, 64)
    assert not torch.equal(first, second)  # a new mask per forward call
    assert len({tuple(row.tolist()) for row in first}) == 256  # per sequence
    assert torch.equal(first.unique(), torch.tensor([0.0, 1 / 0.75]))
    dropped = (first == 0).double().mean().item()
    sigma = (0.25 * 0.75 / first.numel()) ** 0.5
    assert abs(dropped - 0.25) < 3 * sigma


def test_zoneout_masks_rates_and_independence():
    torch.manual_seed(6)
    module = CustomLSTM(4, 64, zoneout=0.1, zoneout_cell=0.3, batch_first=True)
    with recorded_step_masks(module) as masks:
        module(torch.randn(32, 20, 4))
    _, zone_h, zone_c = masks[0]
    assert zone_h.shape == (20, 32, 64) and zone_c.shape == (20, 32, 64)
    for zone, p in ((zone_h, 0.1), (zone_c, 0.3)):
        assert set(zone.unique().tolist()) == {0.0, 1.0}
        sigma = (p * (1 - p) / zone.numel()) ** 0.5
        assert abs(zone.mean().item() - p) < 3 * sigma
    both = (zone_h * zone_c).mean().item()  # independent: P(both) = 0.03
    assert abs(both - 0.03) < 3 * (0.03 * 0.97 / zone_h.numel()) ** 0.5


def test_zoneout_keeps_units_exactly():
    """A unit whose zoneout mask is 1 holds its previous value bit for bit."""
    torch.manual_seed(7)
    module = make("lstm", dict(zoneout=0.5), layers=1, bidirectional=False)
    x = torch.randn(BATCH, STEPS, N_IN, dtype=F64)
    with recorded_step_masks(module) as masks:
        out, _ = module(x)
    zone_h = masks[0][1]  # (T, B, H)
    kept = zone_h[1:].transpose(0, 1).bool()  # (B, T-1, H)
    assert kept.any()
    assert torch.equal(out[:, 1:][kept], out[:, :-1][kept])


# ---------------------------------------------------------------------------------
# The Functions directly, with fixed masks
# ---------------------------------------------------------------------------------


def function_case(cell, batch_sizes, reverse, proj, options, eval_rates=False):
    """(apply, plain, tensor inputs) of one layer-direction with fixed masks."""
    torch.manual_seed(8)
    rows, batch = sum(batch_sizes), max(batch_sizes)
    width = PROJ if proj else HID

    def leaf(*shape):
        return torch.randn(*shape, dtype=F64, requires_grad=True)

    x, w_ih, bias = leaf(rows, N_IN), leaf(4 * HID, N_IN), leaf(4 * HID)
    w_hh = leaf(4 * HID, width)
    w_hr = leaf(PROJ, HID) if proj else None
    h0, c0 = leaf(batch, width), leaf(batch, HID)
    rec = zone_h = zone_c = None
    if "rec" in options:
        rec = torch.empty(batch, width, dtype=F64).bernoulli_(0.6) / 0.6
    if "zone" in options:
        if eval_rates:
            zone_h = torch.full((1, 1), 0.3, dtype=F64).expand(rows, width)
            zone_c = torch.full((1, 1), 0.2, dtype=F64).expand(rows, HID)
        else:
            zone_h = torch.empty(rows, width, dtype=F64).bernoulli_(0.4)
            zone_c = torch.empty(rows, HID, dtype=F64).bernoulli_(0.4)
    masks = (rec, zone_h, zone_c)
    peep = leaf(3 * HID) if cell == "peephole" else None
    tensors = [t for t in (x, w_ih, bias, w_hh, peep, h0, c0, w_hr) if t is not None]

    def split(args):
        args = list(args)
        found = {}
        for name in ("x", "w_ih", "bias", "w_hh", "peep", "h0", "c0", "w_hr"):
            skip = (name == "peep" and peep is None) or (name == "w_hr" and not proj)
            found[name] = None if skip else args.pop(0)
        return found

    def apply(*args):
        a = split(args)
        head = [a["x"], a["w_ih"], a["bias"], a["w_hh"]]
        if peep is not None:
            head.append(a["peep"])
            fn = PeepholeKernelFunction.apply
        else:
            fn = LSTMKernelFunction.apply
        return fn(*head, a["h0"], a["c0"], batch_sizes, reverse, a["w_hr"], *masks)

    def plain(*args):
        a = split(args)
        xw = kernel_project(a["x"], a["w_ih"], a["bias"])
        tail = (batch_sizes, reverse, a["w_hr"], *masks)
        if peep is not None:
            return peephole_kernel_plain(
                xw, a["w_hh"], a["peep"], a["h0"], a["c0"], *tail
            )
        return lstm_kernel_plain(xw, a["w_hh"], a["h0"], a["c0"], *tail)

    return apply, plain, tensors


FUNCTION_CASES = [
    # (cell, batch_sizes, reverse, proj, options)
    ("lstm", [4, 3, 3, 1], False, False, ("rec", "zone")),
    ("lstm", [4, 3, 3, 1], True, False, ("rec", "zone")),
    ("lstm", [3, 3, 2], True, True, ("rec", "zone")),
    ("lstm", [3, 2, 2, 1], False, True, ("zone",)),
    ("lstm", [3, 2, 2, 1], True, False, ("rec",)),
    ("peephole", [4, 3, 3, 1], False, False, ("rec", "zone")),
    ("peephole", [4, 3, 3, 1], True, True, ("rec", "zone")),
    ("peephole", [3, 3, 2], False, True, ("zone",)),
]


@pytest.mark.parametrize("eval_rates", [False, True])
@pytest.mark.parametrize("case", FUNCTION_CASES)
def test_function_gradcheck_and_plain_steps(case, eval_rates):
    """gradcheck of the hand-written backward with fixed masks (0/1 zoneout, or the
    rates as stride-0 views as in eval), and the plain steps give the same values
    and gradients."""
    apply, plain, inputs = function_case(*case, eval_rates=eval_rates)
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


@pytest.mark.parametrize("cell", ["lstm", "peephole"])
def test_function_gradgradcheck(cell):
    """Double backward differentiates the plain steps, masks included."""
    apply, _, inputs = function_case(cell, [3, 2, 2, 1], True, True, ("rec", "zone"))
    assert gradgradcheck(apply, inputs, fast_mode=True)


@pytest.mark.parametrize("cell", ["lstm", "peephole_proj"])
def test_torchscript_eval_with_zoneout_matches_eager(cell):
    torch.manual_seed(9)
    module = make(cell, OPTIONS["both"]).eval()
    scripted = torch.jit.script(module)
    x = torch.randn(BATCH, STEPS, N_IN, dtype=F64)
    for lengths in (None, LENGTHS):
        out, (h_n, c_n) = module(x, lengths=lengths)
        got, (h_got, c_got) = scripted(x, lengths=lengths)
        torch.testing.assert_close(got, out, atol=1e-12, rtol=1e-12)
        torch.testing.assert_close(h_got, h_n, atol=1e-12, rtol=1e-12)
        torch.testing.assert_close(c_got, c_n, atol=1e-12, rtol=1e-12)
