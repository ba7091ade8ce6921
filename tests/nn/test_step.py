"""`model.step`: one step at a time equals `forward` on the whole sequence (eval,
float64) for every cell, option and attention, runtime and generated alike; its
state is forward's; bad inputs raise "Expected X, got Y"."""

import pytest
import torch
from torch import nn

import rnnspec
from tests.specs import spec_with

B, T, N, V = 3, 7, 5, 30

#: (id, spec lines); every model reads `features N` unless its lines say tokens
VARIANTS = [
    ("rnn-tanh", ["cell rnn", "hidden 6", "layers 2"]),
    ("rnn-relu", ["cell rnn nonlinearity=relu", "hidden 6", "layers 2"]),
    ("rnn-custom", ["cell rnn", "hidden 6", "layers 2", "impl custom"]),
    ("lstm", ["cell lstm", "hidden 6", "layers 2"]),
    ("lstm-custom", ["cell lstm", "hidden 6", "layers 2", "impl custom"]),
    ("gru", ["cell gru", "hidden 6", "layers 2"]),
    ("gru-custom", ["cell gru", "hidden 6", "layers 2", "impl custom"]),
    ("no-bias", ["cell lstm", "hidden 6", "layers 2", "bias false"]),
    ("peephole", ["cell lstm", "peephole true", "hidden 6", "layers 2"]),
    ("peephole-proj", ["cell lstm", "peephole true", "hidden 6", "proj 4"]),
    ("proj", ["cell lstm", "hidden 6", "layers 2", "proj 4"]),
    ("proj-custom", ["cell lstm", "hidden 6", "proj 4", "impl custom"]),
    ("norm-lstm", ["cell lstm", "norm layer", "hidden 6", "layers 2"]),
    (
        "norm-lstm-all",
        ["cell lstm", "norm layer", "peephole true", "hidden 6"]
        + ["proj 4", "zoneout 0.3 cell=0.1", "initial_state learned"],
    ),
    ("norm-gru", ["cell gru", "norm layer", "hidden 6", "layers 2"]),
    ("residual", ["cell gru", "hidden 5", "layers 3", "residual true"]),
    ("learned", ["cell lstm", "hidden 6", "layers 2", "initial_state learned"]),
    ("learned-rnn", ["cell rnn", "hidden 6", "initial_state learned"]),
    ("forget-bias", ["cell lstm", "hidden 6", "forget_bias 1.0"]),
    ("zoneout-lstm", ["cell lstm", "hidden 6", "layers 2", "zoneout 0.3 cell=0.6"]),
    ("zoneout-gru", ["cell gru", "hidden 6", "zoneout 0.4"]),
    (
        "zoneout-rnn",
        ["cell rnn", "hidden 6", "zoneout 0.4", "residual true"] + ["layers 2"],
    ),
    ("zoneout-peephole", ["cell lstm", "peephole true", "hidden 6", "zoneout 0.2"]),
    ("zoneout-norm-gru", ["cell gru", "norm layer", "hidden 6", "zoneout 0.2"]),
    (
        "regularizers",
        ["cell lstm", "hidden 6", "layers 2", "recurrent_dropout 0.3"]
        + ["weight_drop 0.4", "dropout 0.2 locked=true"],
    ),
    (
        "tokens",
        ["input tokens 30 embed=4 dropout=0.2", "cell lstm", "hidden 6"]
        + ["head logits dropout=0.3"],
    ),
    (
        "awd",
        ["input tokens 30 embed=6 dropout=0.2 word_dropout=0.1 locked=true"]
        + ["cell lstm", "hidden 6", "layers 2", "weight_drop 0.5"]
        + ["head logits tie=true dropout=0.3 locked=true"],
    ),
    ("linear-head", ["cell gru", "hidden 6", "head linear 2 dropout=0.5"]),
    ("time-major", ["cell lstm", "hidden 6", "batch_first false", "packing true"]),
]
for kind in ("dot", "general", "additive"):
    for mask in ("causal", "strict"):
        for combine in ("replace", "concat"):
            attention = f"attention {kind} mask={mask} combine={combine}"
            VARIANTS.append(
                (
                    f"{kind}-{mask}-{combine}",
                    ["cell lstm", "hidden 6", "layers 2", attention + " scale=true"]
                    + ["head linear 3"],
                )
            )
VARIANTS.append(("attention-gru", ["cell gru", "hidden 6", "attention general"]))
IDS = [name for name, _ in VARIANTS]


def spec_of(lines):
    if not any(line.startswith("input") for line in lines):
        lines = [f"input features {N}", *lines]
    (spec,) = rnnspec.parse(spec_with(*lines))
    return spec


def prepared(model: nn.Module) -> nn.Module:
    """float64, eval, every parameter drawn anew (peepholes, gains, learned states
    non-zero, so that leaving one out shows)."""
    model = model.double().eval()
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.uniform_(-0.6, 0.6)
    return model


def inputs(spec):
    """A (B, T) batch of tokens or (B, T, N) features; batch-first."""
    torch.manual_seed(2)
    if spec.input.kind == "tokens":
        return torch.randint(0, spec.input.vocab, (B, T))
    return torch.randn(B, T, N, dtype=torch.float64)


def forward(model, spec, x, state=None):
    """forward on batch-first x, output batch-first."""
    if not spec.batch_first:
        out, state = model(x.transpose(0, 1), None, state)
        return out.transpose(0, 1), state
    return model(x, None, state)


def stepped(model, x, state=None):
    """Every step of x through model.step: (outputs (B, T, F), final state)."""
    outs = []
    for t in range(x.shape[1]):
        out, state = model.step(x[:, t], state)
        outs.append(out)
    return torch.stack(outs, 1), state


def rnn_state(spec, state):
    return state[0] if spec.attention is not None else state


def assert_states_equal(got, expected):
    if isinstance(expected, tuple):
        assert isinstance(got, tuple) and len(got) == 2
        for g, e in zip(got, expected):
            torch.testing.assert_close(g, e, rtol=1e-12, atol=1e-12)
    else:
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def check_equal(model, spec):
    x = inputs(spec)
    with torch.no_grad():
        expected, expected_state = forward(model, spec, x)
        got, state = stepped(model, x)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    assert_states_equal(rnn_state(spec, state), expected_state)
    return x, state


@pytest.mark.parametrize("lines", [lines for _, lines in VARIANTS], ids=IDS)
def test_step_over_a_sequence_equals_forward(lines):
    spec = spec_of(lines)
    model = prepared(rnnspec.instantiate(spec))
    x, state = check_equal(model, spec)
    if spec.attention is not None:  # memory: the recurrent outputs (and keys)
        with torch.no_grad():
            embedded = x if model.embedding is None else model.embedding(x)
            outputs = model.rnn(embedded)[0]  # (B, T, D)
            memory = state[1]
            torch.testing.assert_close(memory[..., :6], outputs, rtol=0, atol=1e-12)
            if spec.attention.kind == "additive":
                keys = model.attention.key(outputs)
                torch.testing.assert_close(memory[..., 6:], keys, rtol=0, atol=1e-12)
            else:
                assert memory.shape == (B, T, 6)


@pytest.mark.parametrize(
    "name", ["lstm", "peephole-proj", "norm-lstm-all", "zoneout-rnn", "tokens"]
)
def test_step_from_a_given_state_equals_forward_from_it(name):
    spec = spec_of(dict(VARIANTS)[name])
    model = prepared(rnnspec.instantiate(spec))
    x = inputs(spec)
    L, width = spec.layers, spec.proj or spec.hidden
    torch.manual_seed(3)
    h0 = torch.randn(L, B, width, dtype=torch.float64)
    start = (h0, torch.randn(L, B, spec.hidden, dtype=torch.float64))
    if spec.cell != "lstm":
        start = h0
    with torch.no_grad():
        expected, expected_state = forward(model, spec, x, start)
        got, state = stepped(model, x, start)
        # a stream split in two: the second half goes on from the first's state
        first, middle = stepped(model, x[:, :3], start)
        second, end = stepped(model, x[:, 3:], middle)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    assert_states_equal(state, expected_state)
    torch.testing.assert_close(torch.cat([first, second], 1), expected)
    assert_states_equal(end, expected_state)


@pytest.mark.parametrize(
    "name",
    ["lstm", "proj", "gru-custom", "norm-lstm-all", "zoneout-lstm", "awd"]
    + ["additive-strict-concat", "dot-causal-replace", "general-strict-replace"],
)
def test_the_generated_class_steps_as_forward(name, load_generated):
    spec = spec_of(dict(VARIANTS)[name])
    module = load_generated(rnnspec.generate(spec))
    model = prepared(getattr(module, spec.name)())
    assert type(model).__module__ == module.__name__
    check_equal(model, spec)
    runtime = prepared(rnnspec.instantiate(spec))
    with torch.no_grad():
        torch.testing.assert_close(
            stepped(model, inputs(spec))[0], stepped(runtime, inputs(spec))[0]
        )


def test_the_step_code_brings_no_other_cell_into_a_generated_file():
    text = rnnspec.generate(spec_of(dict(VARIANTS)["lstm-custom"]))
    assert "def step_kernel_stack" in text and "class CustomLSTM" in text
    for other in ("class CustomGRU", "class CustomRNN", "def step_attention"):
        assert other not in text, other


@pytest.mark.parametrize("name", ["lstm-custom", "peephole", "dot-strict-replace"])
def test_step_gradients_equal_forwards(name):
    """Streaming in eval with autograd: the gradients of forward's."""
    spec = spec_of(dict(VARIANTS)[name])
    model = prepared(rnnspec.instantiate(spec))
    x = inputs(spec).requires_grad_()
    weights = torch.randn(B, T, 3 if spec.head else 6, dtype=torch.float64)
    expected = torch.autograd.grad(
        (forward(model, spec, x)[0] * weights).sum(), [x, *model.parameters()]
    )
    got = torch.autograd.grad(
        (stepped(model, x)[0] * weights).sum(), [x, *model.parameters()]
    )
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-12)


class Stepper(nn.Module):
    """forward is model.step: so that torch.func.functional_call can swap weights."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x, state):
        return self.model.step(x, state)


@pytest.mark.parametrize("name", ["lstm", "peephole"])
def test_step_reads_weights_swapped_by_functional_call(name):
    spec = spec_of(dict(VARIANTS)[name])
    model = prepared(rnnspec.instantiate(spec))
    other = {k: torch.rand_like(v) for k, v in model.named_parameters()}
    x = inputs(spec)
    stepper = Stepper(model)
    swapped = {f"model.{k}": v for k, v in other.items()}
    with torch.no_grad():
        expected = torch.func.functional_call(model, other, (x,))[0]
        outs, state = [], None
        for t in range(T):
            out, state = torch.func.functional_call(stepper, swapped, (x[:, t], state))
            outs.append(out)
    torch.testing.assert_close(torch.stack(outs, 1), expected)
    with torch.no_grad():  # and the model's own weights are back
        torch.testing.assert_close(stepped(model, x)[0], model(x)[0])


def test_a_single_step_is_forward_with_one_step_and_batch_of_one():
    spec = spec_of(dict(VARIANTS)["tokens"])
    model = prepared(rnnspec.instantiate(spec))
    x = torch.tensor([7])
    with torch.no_grad():
        out, (h, c) = model.step(x)
        expected, (eh, ec) = model(x[:, None])
    assert out.shape == (1, V) and h.shape == (1, 1, 6) and c.shape == (1, 1, 6)
    torch.testing.assert_close(out, expected[:, 0])
    torch.testing.assert_close((h, c), (eh, ec))


# -- what step refuses ------------------------------------------------------------


def model_of(*lines):
    return rnnspec.instantiate(spec_of(list(lines))).eval()


def test_step_needs_eval_mode():
    model = model_of("cell lstm", "hidden 4").train()
    with pytest.raises(ValueError, match="Expected a model in eval mode for step"):
        model.step(torch.randn(2, N))


def test_step_refuses_pooled_heads_two_directions_and_spinn():
    pooled = model_of("cell gru", "hidden 4", "head classes 3 pool=mean")
    with pytest.raises(
        ValueError,
        match=r"Expected a model with an output per step for step \(no head, "
        r"linear or logits\), got a classes head \(pool=mean\)",
    ):
        pooled.step(torch.randn(2, N))
    both = model_of("cell lstm", "hidden 4", "directions 2")
    with pytest.raises(ValueError, match="Expected directions 1 for step.*got 2"):
        both.step(torch.randn(2, N))
    (spec,) = rnnspec.parse(
        spec_with("input tokens 10 embed=4", "encoder spinn", "hidden 4")
    )
    spinn = rnnspec.instantiate(spec).eval()
    with pytest.raises(ValueError, match="Expected a recurrent model .* got SPINN"):
        spinn.step(torch.tensor([1, 2]))


def test_step_names_the_expected_and_the_actual_input():
    tokens = model_of("input tokens 30 embed=4", "cell lstm", "hidden 4")
    message = "Expected int64 token ids of shape (B,), got "
    for bad, got in [
        (torch.tensor([[1, 2]]), "torch.int64 tensor of shape (1, 2)"),
        (torch.tensor([1.0, 2.0]), "torch.float32 tensor of shape (2,)"),
        ([1, 2], "list"),
    ]:
        with pytest.raises(ValueError) as info:
            tokens.step(bad)
        assert str(info.value) == message + got
    features = model_of("cell gru", "hidden 4")
    message = f"Expected float features of shape (B, {N}), got "
    for bad, got in [
        (torch.randn(2, 4), "torch.float32 tensor of shape (2, 4)"),
        (torch.randn(2, 1, N), f"torch.float32 tensor of shape (2, 1, {N})"),
        (torch.ones(2, N, dtype=torch.long), f"torch.int64 tensor of shape (2, {N})"),
    ]:
        with pytest.raises(ValueError) as info:
            features.step(bad)
        assert str(info.value) == message + got


def test_step_names_the_expected_and_the_actual_state():
    lstm = model_of("cell lstm", "hidden 4", "layers 2")
    x = torch.randn(3, N)
    with pytest.raises(
        ValueError, match=r"Expected h0 of shape \(2, 3, 4\), got \(1, 3, 4\)"
    ):
        lstm.step(x, (torch.zeros(1, 3, 4), torch.zeros(2, 3, 4)))
    with pytest.raises(ValueError, match=r"Expected state \(h0, c0\) .* got Tensor"):
        lstm.step(x, torch.zeros(2, 3, 4))
    attention = model_of("cell gru", "hidden 4", "attention additive")
    _, state = attention.step(x)
    with pytest.raises(ValueError) as info:
        attention.step(x, state[0])
    assert str(info.value) == (
        "Expected the state of an attention model as (h, memory), got "
        "torch.float32 tensor of shape (1, 3, 4)"
    )
    lstm_attention = model_of("cell lstm", "hidden 4", "attention dot")
    _, (hc, memory) = lstm_attention.step(x)
    with pytest.raises(ValueError) as info:
        lstm_attention.step(x, hc)  # forward's state, without the memory
    assert str(info.value) == (
        "Expected the state of an attention model as ((h, c), memory), got "
        "(Tensor, Tensor)"
    )
    lstm_attention.step(x, (hc, memory))
    with pytest.raises(
        ValueError, match=r"Expected memory of shape \(3, t, 8\), got .*\(3, 1, 4\)"
    ):
        attention.step(x, (state[0], state[1][..., :4]))
    _, state = attention.step(x, state)  # the state it returned goes on
    assert state[1].shape == (3, 2, 8)
