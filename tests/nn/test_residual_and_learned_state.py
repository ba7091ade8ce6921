"""`residual` and `initial_state="learned"` on every kernel class, on our kernel and on
torch's (called a layer at a time), against step-by-step loops written from the
equations in float64: outputs, states and gradients; gradcheck; parameters."""

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rnnspec.nn import CustomGRU, CustomLSTM, CustomRNN, PeepholeLSTM

N_IN, HID, PROJ = 3, 5, 3
CELLS = {
    "rnn_tanh": (CustomRNN, nn.RNN, {"nonlinearity": "tanh"}),
    "rnn_relu": (CustomRNN, nn.RNN, {"nonlinearity": "relu"}),
    "gru": (CustomGRU, nn.GRU, {}),
    "lstm": (CustomLSTM, nn.LSTM, {}),
    "peephole": (PeepholeLSTM, nn.LSTM, {}),
}
IMPLS = {cell: ("custom", "auto", "torch") for cell in CELLS}
IMPLS["peephole"] = ("custom", "auto")  # torch has no peephole kernel
CASES = [(cell, impl) for cell in CELLS for impl in IMPLS[cell]]
FORMS = ("padded", "lengths", "packed", "unbatched")
# (layers, bidirectional, batch_first)
STACKS = [(2, True, True), (3, False, False)]


def build(
    cell,
    impl,
    layers=2,
    bidirectional=True,
    batch_first=True,
    residual=True,
    initial_state="learned",
    proj_size=0,
    **kw,
):
    """A float64 module; learned states drawn non-zero so that using them shows."""
    cls, _, extra = CELLS[cell]
    if proj_size:
        kw["proj_size"] = proj_size
    torch.manual_seed(0)
    try:
        module = cls(
            N_IN,
            HID,
            layers,
            batch_first=batch_first,
            bidirectional=bidirectional,
            impl=impl,
            residual=residual,
            initial_state=initial_state,
            **extra,
            **kw,
        )
    except ValueError as error:
        if proj_size and "proj_size" in str(error):
            pytest.skip(f"{cls.__name__} has no proj_size yet")
        raise
    module = module.double()
    with torch.no_grad():
        for p in (module.h0, module.c0):
            if p is not None:
                p.normal_()
    return module


# ---------------------------------------------------------------------------------
# The reference: one sequence, one step at a time, from the equations
# ---------------------------------------------------------------------------------


def step(cell, p, sfx, x, h, c):
    """One step of one layer-direction (1-D vectors); returns (h, c)."""
    gi = p[f"weight_ih_l{sfx}"] @ x + p.get(f"bias_ih_l{sfx}", 0)
    gh = p[f"weight_hh_l{sfx}"] @ h + p.get(f"bias_hh_l{sfx}", 0)
    if cell in ("lstm", "peephole"):
        a_i, a_f, a_g, a_o = (gi + gh).chunk(4)
        if cell == "peephole":
            p_i, p_f, p_o = p[f"weight_ch_l{sfx}"].chunk(3)
            a_i, a_f = a_i + p_i * c, a_f + p_f * c
        c = torch.sigmoid(a_f) * c + torch.sigmoid(a_i) * torch.tanh(a_g)
        if cell == "peephole":
            a_o = a_o + p_o * c
        h = torch.sigmoid(a_o) * torch.tanh(c)
        w_hr = p.get(f"weight_hr_l{sfx}")
        return (h if w_hr is None else w_hr @ h), c
    if cell == "gru":
        i_r, i_z, i_n = gi.chunk(3)
        h_r, h_z, h_n = gh.chunk(3)
        r, z = torch.sigmoid(i_r + h_r), torch.sigmoid(i_z + h_z)
        n = torch.tanh(i_n + r * h_n)
        return (1 - z) * n + z * h, None
    return (torch.relu if cell == "rnn_relu" else torch.tanh)(gi + gh), None


def reference(module, cell, x, lengths, state, masks=()):
    """(B, T, D*W) outputs and final states of the stack, for batch-first `x`.

    Layer k >= 1 adds its (dropped-out) input to its output when residual; the
    states start from `state`, else the learned h0/c0, else zeros; masks[k] is the
    dropout after layer k.
    """
    p = dict(module.named_parameters())
    num_dirs = 2 if module.bidirectional else 1
    batch, steps = x.shape[0], x.shape[1]
    lengths = [steps] * batch if lengths is None else lengths.tolist()
    if state is None:
        rows = module.num_layers * num_dirs
        learned = [p[n] for n in ("h0", "c0") if n in p]
        state = [s.unsqueeze(1).expand(rows, batch, s.shape[1]) for s in learned]
        if not learned:
            widths = module._kernel_state_sizes()
            state = [x.new_zeros(rows, batch, w) for w in widths]
    finals = [[[None] * batch for _ in range(len(state[0]))] for _ in state]
    inp = x
    for layer in range(module.num_layers):
        outs = []
        for d in range(num_dirs):
            k = layer * num_dirs + d
            sfx = f"{layer}_reverse" if d else f"{layer}"
            per_seq = []
            for b in range(batch):
                h = state[0][k, b]
                c = state[1][k, b] if len(state) > 1 else None
                col = [x.new_zeros(h.shape[0])] * steps
                order = range(lengths[b])
                for t in reversed(order) if d else order:
                    h, c = step(cell, p, sfx, inp[b, t], h, c)
                    col[t] = h
                finals[0][k][b] = h
                if c is not None:
                    finals[1][k][b] = c
                per_seq.append(torch.stack(col))
            outs.append(torch.stack(per_seq))
        out = torch.cat(outs, -1)
        inp = out + inp if module.residual and layer > 0 else out
        if layer < len(masks):
            inp = inp * masks[layer]
    return inp, [torch.stack([torch.stack(rows) for rows in f]) for f in finals]


# ---------------------------------------------------------------------------------
# The module, in each input form
# ---------------------------------------------------------------------------------


def as_torch_state(module, state):
    if state is None:
        return None
    return (state[0], state[1]) if module.mode == "LSTM" else state[0]


def run(module, form, x, lengths, state):
    """Batch-first (B, T, D*W) outputs and the final states as a list."""
    steps = x.shape[1]
    if form == "unbatched":
        hx = None if state is None else [s[:, 0] for s in state]
        out, final = module(x[0], as_torch_state(module, hx))
        final = final if isinstance(final, tuple) else (final,)
        return out.unsqueeze(0), [s.unsqueeze(1) for s in final]
    inp = x if module.batch_first else x.transpose(0, 1)
    hx = as_torch_state(module, state)
    if form == "padded":
        out, final = module(inp, hx)
    elif form == "lengths":
        out, final = module(inp, hx, lengths=lengths)
    else:
        packed = nn.utils.rnn.pack_padded_sequence(
            inp, lengths, batch_first=module.batch_first, enforce_sorted=False
        )
        out, final = module(packed, hx)
        out, _ = nn.utils.rnn.pad_packed_sequence(
            out, batch_first=module.batch_first, total_length=steps
        )
    out = out if module.batch_first else out.transpose(0, 1)
    return out, list(final) if isinstance(final, tuple) else [final]


def inputs(module, form, given_state=False, batch=3, steps=5):
    torch.manual_seed(1)
    if form == "unbatched":
        batch = 1
    x = torch.randn(batch, steps, N_IN, dtype=torch.float64, requires_grad=True)
    lengths = None
    if form in ("lengths", "packed"):
        lengths = torch.tensor([steps - (2 * i) % steps for i in range(batch)])
    state = None
    if given_state:
        rows = module.num_layers * (2 if module.bidirectional else 1)
        state = [
            torch.randn(rows, batch, w, dtype=torch.float64, requires_grad=True)
            for w in module._kernel_state_sizes()
        ]
    return x, lengths, state


def outputs_and_grads(module, fn, x, state):
    """The outputs, states and gradients of a fixed random loss through `fn`."""
    out, final = fn()
    gen = torch.Generator().manual_seed(2)
    loss = sum(
        (t * torch.randn(t.shape, generator=gen, dtype=t.dtype)).sum()
        for t in [out, *final]
    )
    leaves = [x, *(state or []), *module.parameters()]
    grads = torch.autograd.grad(loss, leaves, allow_unused=True)
    return [out, *final], grads


def assert_same(module, cell, form, x, lengths, state, masks=()):
    ours, ours_grads = outputs_and_grads(
        module, lambda: run(module, form, x, lengths, state), x, state
    )
    expected, expected_grads = outputs_and_grads(
        module, lambda: reference(module, cell, x, lengths, state, masks), x, state
    )
    assert len(ours) == len(expected)
    for got, want in zip(ours, expected):
        torch.testing.assert_close(got, want)
    names = (
        ["x"] + ["state"] * len(state or []) + [n for n, _ in module.named_parameters()]
    )
    for name, got, want in zip(names, ours_grads, expected_grads):
        assert (got is None) == (want is None), name
        if got is not None:
            torch.testing.assert_close(
                got, want, msg=lambda m, name=name: f"{name}: {m}"
            )
    return dict(zip(names, ours_grads))


# ---------------------------------------------------------------------------------
# Against the reference
# ---------------------------------------------------------------------------------


@pytest.mark.parametrize("layers,bidirectional,batch_first", STACKS)
@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("cell,impl", CASES)
def test_residual_learned_stack_matches_reference(
    cell, impl, form, layers, bidirectional, batch_first
):
    module = build(cell, impl, layers, bidirectional, batch_first)
    x, lengths, _ = inputs(module, form)
    grads = assert_same(module, cell, form, x, lengths, None)
    assert grads["h0"] is not None and grads["h0"].abs().sum() > 0
    if module.mode == "LSTM":
        assert grads["c0"] is not None and grads["c0"].abs().sum() > 0


@pytest.mark.parametrize("form", ("padded", "packed"))
@pytest.mark.parametrize(
    "residual,initial_state", [(True, "zeros"), (False, "learned")]
)
@pytest.mark.parametrize("cell,impl", [(c, i) for c, i in CASES if i != "auto"])
def test_each_option_alone_matches_reference(cell, impl, residual, initial_state, form):
    module = build(cell, impl, residual=residual, initial_state=initial_state)
    x, lengths, _ = inputs(module, form)
    assert_same(module, cell, form, x, lengths, None)


@pytest.mark.parametrize("form", ("padded", "packed", "unbatched"))
@pytest.mark.parametrize("cell,impl", CASES)
def test_learned_state_is_used_only_without_a_state(cell, impl, form):
    module = build(cell, impl)
    x, lengths, state = inputs(module, form, given_state=True)
    grads = assert_same(module, cell, form, x, lengths, state)
    assert grads["h0"] is None
    assert "c0" not in grads or grads["c0"] is None


def test_learned_state_one_layer_without_residual_matches_reference():
    module = build("lstm", "custom", layers=1, residual=False)
    x, lengths, _ = inputs(module, "lengths")
    assert_same(module, "lstm", "lengths", x, lengths, None)


@pytest.mark.parametrize("impl", ("custom", "torch"))
@pytest.mark.parametrize("cell", ("lstm", "gru"))
def test_dropout_between_layers_as_torch_applies_it(cell, impl):
    """In training, layer k's output is dropped out before layer k+1 adds it: the
    masks are torch's, drawn in layer order over the (T, B, D*H) outputs."""
    module = build(cell, impl, layers=3, batch_first=False, dropout=0.4).train()
    x, _, _ = inputs(module, "padded")
    torch.manual_seed(5)
    ours, final = run(module, "padded", x, None, None)
    torch.manual_seed(5)
    batch, steps, width = ours.shape
    masks = [
        F.dropout(torch.ones(steps, batch, width, dtype=torch.float64), 0.4, True)
        for _ in range(2)
    ]
    expected, expected_final = reference(
        module, cell, x, None, None, [m.transpose(0, 1) for m in masks]
    )
    torch.testing.assert_close(ours, expected)
    for got, want in zip(final, expected_final):
        torch.testing.assert_close(got, want)
    module.eval()  # no dropout in eval
    torch.testing.assert_close(
        run(module, "padded", x, None, None)[0],
        reference(module, cell, x, None, None)[0],
    )


@pytest.mark.parametrize("form", ("padded", "lengths", "packed"))
@pytest.mark.parametrize("impl", ("custom", "auto", "torch"))
def test_proj_lstm_residual_learned_matches_reference(impl, form):
    """h is P wide (h0 too), c is H wide (c0 too); layer k >= 1 reads D*P."""
    module = build("lstm", impl, layers=3, proj_size=PROJ)
    assert module.h0.shape == (6, PROJ) and module.c0.shape == (6, HID)
    assert module._kernel_state_sizes() == [PROJ, HID]
    x, lengths, _ = inputs(module, form)
    assert_same(module, "lstm", form, x, lengths, None)
    x, lengths, state = inputs(module, form, given_state=True)
    assert_same(module, "lstm", form, x, lengths, state)


@pytest.mark.parametrize("bias", (True, False))
def test_kernel_weights_follow_torchs_flat_order_with_proj(bias):
    module = build("lstm", "torch", layers=2, proj_size=PROJ, bias=bias)
    for layer in range(2):
        for d, sfx in enumerate(("", "_reverse")):
            k = 2 * layer + d
            w_ih, w_hh, b_ih, b_hh = module._kernel_weights(k)
            assert w_ih is getattr(module, f"weight_ih_l{layer}{sfx}")
            assert w_hh is getattr(module, f"weight_hh_l{layer}{sfx}")
            assert b_ih is getattr(module, f"bias_ih_l{layer}{sfx}", None)
            assert b_hh is getattr(module, f"bias_hh_l{layer}{sfx}", None)
            w_hr = module._kernel_proj_weight(k)
            assert w_hr is getattr(module, f"weight_hr_l{layer}{sfx}")
    assert build("lstm", "torch")._kernel_proj_weight(0) is None


# ---------------------------------------------------------------------------------
# Numerical gradients
# ---------------------------------------------------------------------------------


@pytest.mark.parametrize("cell,impl", [(c, i) for c, i in CASES if i != "auto"])
def test_gradcheck(cell, impl):
    """Through the hand-written backward (custom) and torch's (layer at a time):
    the input, the learned states and a weight of a residual layer."""
    module = build(cell, impl, layers=2)
    names = ["h0", "c0", "weight_hh_l1_reverse"] if module.mode == "LSTM" else ["h0"]
    names = [n for n in names if n in dict(module.named_parameters())]
    params = [getattr(module, n).detach().clone().requires_grad_() for n in names]
    torch.manual_seed(3)
    x = torch.randn(2, 3, N_IN, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([3, 2])

    def f(x, *params):
        out, state = torch.func.functional_call(
            module, dict(zip(names, params)), (x,), {"lengths": lengths}
        )
        state = state if isinstance(state, tuple) else (state,)
        return (out, *state)

    assert torch.autograd.gradcheck(f, (x, *params))


# ---------------------------------------------------------------------------------
# Parameters, arguments, deployment
# ---------------------------------------------------------------------------------


@pytest.mark.parametrize("cell", ["rnn_tanh", "gru", "lstm"])
def test_same_seed_gives_torchs_weights_then_zero_states(cell):
    cls, torch_cls, extra = CELLS[cell]
    args = dict(num_layers=2, bidirectional=True, **extra)
    torch.manual_seed(0)
    theirs = torch_cls(N_IN, HID, **args)
    after_theirs = torch.rand(3)
    torch.manual_seed(0)
    ours = cls(N_IN, HID, **args, residual=True, initial_state="learned")
    torch.testing.assert_close(torch.rand(3), after_theirs)  # no extra draws
    states = ["h0", "c0"] if cell == "lstm" else ["h0"]
    assert list(ours.state_dict()) == list(theirs.state_dict()) + states
    for name, value in theirs.state_dict().items():
        torch.testing.assert_close(ours.state_dict()[name], value, rtol=0, atol=0)
    for name in states:
        assert torch.equal(ours.state_dict()[name], torch.zeros(4, HID))
    result = ours.load_state_dict(theirs.state_dict(), strict=False)
    assert result.missing_keys == states and not result.unexpected_keys
    plain = cls(N_IN, HID, **args)
    assert list(plain.state_dict()) == list(theirs.state_dict())
    assert plain.h0 is None and plain.c0 is None


def test_same_seed_gives_torchs_weights_with_proj():
    torch.manual_seed(0)
    theirs = nn.LSTM(N_IN, HID, 2, bidirectional=True, proj_size=PROJ)
    module = build("lstm", "torch", proj_size=PROJ)  # seeds 0 too
    for name, value in theirs.state_dict().items():
        torch.testing.assert_close(module.state_dict()[name], value.double())
    assert list(module.state_dict())[-2:] == ["h0", "c0"]


def test_peephole_learned_states_come_before_its_peepholes():
    module = PeepholeLSTM(N_IN, HID, 2, residual=True, initial_state="learned")
    names = list(module.state_dict())
    assert names.index("c0") == names.index("h0") + 1
    assert names[-2:] == ["weight_ch_l0", "weight_ch_l1"]


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"residual": True}, r"Expected num_layers >= 2 with residual=True.*got 1"),
        ({"residual": "yes"}, r"Expected residual True or False, got 'yes'"),
        (
            {"initial_state": "random"},
            r"Expected initial_state 'zeros' or 'learned', got 'random'",
        ),
    ],
)
@pytest.mark.parametrize("cls", [CustomRNN, CustomGRU, CustomLSTM, PeepholeLSTM])
def test_bad_options_are_one_line_errors(cls, kwargs, message):
    with pytest.raises(ValueError, match=message):
        cls(N_IN, HID, **kwargs)


def test_repr_names_the_options():
    text = repr(CustomGRU(N_IN, HID, 2, residual=True, initial_state="learned"))
    assert "residual=True" in text and "initial_state='learned'" in text
    assert "residual" not in repr(CustomGRU(N_IN, HID, 2))


def test_state_of_another_width_is_torchs_error():
    module = build("lstm", "custom")
    x = torch.randn(2, 4, N_IN, dtype=torch.float64)
    h = torch.zeros(4, 2, HID, dtype=torch.float64)
    with pytest.raises(RuntimeError, match=r"Expected hidden\[1\] size \(4, 2, 5\)"):
        module(x, (h, h[..., :2]))


@pytest.mark.parametrize("cell", ["gru", "lstm", "peephole"])
def test_torchscript_matches_eager(cell):
    module = build(cell, "custom", layers=3).eval()
    scripted = torch.jit.script(module)
    x, lengths, _ = inputs(module, "lengths")
    for kw in ({}, {"lengths": lengths}):
        torch.testing.assert_close(scripted(x, **kw)[0], module(x, **kw)[0])
    plain = torch.jit.script(CELLS[cell][0](N_IN, HID, 2).double())  # no h0 at all
    assert plain(x)[0].shape == (3, 5, HID)


@pytest.mark.parametrize("impl", ("custom", "auto"))
def test_torch_export_matches_eager(impl):
    module = build("lstm", impl, layers=3).eval()
    x, _, _ = inputs(module, "padded")
    x = x.detach()
    exported = torch.export.export(module, (x,)).module()
    for got, want in zip(exported(x), module(x)):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("impl", ("custom", "auto"))
def test_onnx_export_runs_in_onnxruntime(impl):
    """torch's ONNX decomposition needs contiguous initial states: the learned ones
    are copied over the batch, not expanded."""
    pytest.importorskip("onnxscript", reason="torch.onnx.export needs onnxscript")
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
    module = build("lstm", impl).float().eval()
    x = torch.randn(3, 5, N_IN)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            module,
            (x,),
            input_names=["x"],
            dynamic_shapes={"input": {0: "batch"}},
            dynamo=True,
            verbose=False,
        )
    session = ort.InferenceSession(
        program.model_proto.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    for batch in (3, 5):
        x = torch.randn(batch, 5, N_IN)
        out, (h, c) = module(x)
        for got, want in zip(session.run(None, {"x": x.numpy()}), (out, h, c)):
            torch.testing.assert_close(torch.from_numpy(got), want)
