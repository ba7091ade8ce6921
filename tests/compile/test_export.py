"""Deployment: torch.export, torch.jit.script, ONNX and torch.compile match eager.

Torch-kernel models (cells rnn/lstm/gru on torch's modules) must export everywhere.
Models on rnnspec's own kernels and attention run the same checks, parametrised over
what `rnnspec.nn` holds; a class that is not there yet is skipped, saying which.
"""

from __future__ import annotations

import io
import logging
import warnings

import pytest
import torch
from torch.export import Dim

import rnnspec
from rnnspec.compile.nnsource import index
from rnnspec.compile.plan import model_call

TORCH = {
    "lstm-tokens-logits": """
        input tokens 50 embed=16
        cell lstm
        hidden 16
        head logits tie=true""",
    "gru-features-linear": """
        input features 8
        cell gru
        hidden 12
        layers 2
        directions 2
        head linear 5""",
    "rnn-relu-classes-mean": """
        input features 8
        cell rnn nonlinearity=relu
        hidden 12
        head classes 3 pool=mean""",
    "lstm-bidir-classes-last-time-major": """
        input features 8
        cell lstm
        hidden 12
        directions 2
        batch_first false
        head classes 3""",
    "lstm-packed-classes-max": """
        input features 8
        cell lstm
        hidden 12
        layers 2
        packing true
        impl torch
        head classes 3 pool=max""",
    "gru-tokens-packed-no-head": """
        input tokens 50 embed=16
        cell gru
        hidden 16
        packing true
        impl torch""",
}
KERNELS = {
    "custom-lstm": """
        input features 8
        cell lstm
        hidden 12
        impl custom
        head linear 4""",
    "custom-gru-packed": """
        input features 8
        cell gru
        hidden 12
        directions 2
        packing true
        impl custom
        head classes 3""",
    "custom-rnn": """
        input tokens 50 embed=16
        cell rnn
        hidden 16
        impl custom
        head logits""",
    "peephole-lstm": """
        input features 8
        cell lstm
        peephole true
        hidden 12
        layers 2
        head linear 4""",
}
ATTENTION = {
    f"attention-{kind}": f"""
        input tokens 50 embed=16
        cell lstm
        hidden 16
        attention {kind} {options}
        head logits"""
    for kind, options in (
        ("dot", "mask=causal"),
        ("general", "mask=strict scale=true"),
        ("additive", "combine=concat"),
    )
}
#: One spec per cell option of issue 13 (and all of them at once).
OPTIONS = {
    "proj-lstm-torch-kernel": """
        input features 8
        cell lstm
        hidden 12
        proj 6
        layers 2
        directions 2
        head linear 4""",
    "proj-peephole-packed": """
        input features 8
        cell lstm
        peephole true
        hidden 12
        proj 5
        packing true
        head classes 3""",
    "forget-bias": """
        input tokens 50 embed=16
        cell lstm
        forget_bias 1.0
        hidden 16
        head logits""",
    "residual-gru": """
        input features 8
        cell gru
        hidden 8
        layers 3
        residual true
        head linear 4""",
    "learned-state-rnn": """
        input features 8
        cell rnn
        hidden 12
        layers 2
        initial_state learned
        head linear 4""",
    "norm-gru": """
        input features 8
        cell gru
        norm layer
        hidden 12
        directions 2
        head linear 4""",
    "norm-lstm-everything": """
        input features 8
        cell lstm
        peephole true
        norm layer
        hidden 12
        proj 6
        layers 3
        directions 2
        residual true
        initial_state learned
        packing true
        head classes 3""",
}
#: The dropouts of issue 14 that act around the step (eval: the identity).
REGULARIZERS = {
    "awd-dropouts": """
        input tokens 50 embed=16 dropout=0.4 locked=true word_dropout=0.1
        cell lstm
        hidden 16
        layers 2
        dropout 0.25 locked=true
        weight_drop 0.5
        head logits tie=true dropout=0.4 locked=true""",
    "locked-head-classes": """
        input features 8
        cell gru
        hidden 12
        head classes 3 pool=mean dropout=0.3 locked=true""",
}
ALL = {**TORCH, **KERNELS, **ATTENTION, **OPTIONS, **REGULARIZERS}
CASES = list(ALL)


@pytest.fixture(autouse=True)
def quiet():
    logging.getLogger("torch").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def make(name: str, seed: int = 0):
    """(spec, model in eval mode, args) for `name`; skips when a class is missing."""
    spec = rnnspec.parse(f"model M {{{ALL[name]}\n}}")[0]
    missing = [
        callee
        for callee in model_call(spec).callees()
        if not callee.startswith("nn.") and callee not in index()[0]
    ]
    if missing:
        pytest.skip(f"rnnspec.nn has no {', '.join(missing)} yet")
    torch.manual_seed(seed)
    model = rnnspec.instantiate(spec).eval()
    return spec, model, inputs(spec, 3)


def inputs(spec, batch: int, steps: int = 7) -> tuple:
    if spec.input.kind == "tokens":
        x = torch.randint(0, spec.input.vocab, (batch, steps))
    else:
        x = torch.randn(batch, steps, spec.input.size)
    if not spec.batch_first:
        x = x.transpose(0, 1).contiguous()
    return (x,)


def lengths_of(batch: int, steps: int = 7) -> torch.Tensor:
    return torch.tensor([steps - (3 * i) % steps for i in range(batch)])


def flat(output) -> list[torch.Tensor]:
    if isinstance(output, torch.Tensor):
        return [output]
    return [t for part in output for t in flat(part)]


def assert_close(got, expected, atol: float = 1e-5) -> None:
    got, expected = flat(got), flat(expected)
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, atol=atol, rtol=1e-4)


@pytest.mark.parametrize("name", CASES)
def test_torch_export_matches_eager(name):
    spec, model, args = make(name)
    batch_dim = 1 if not spec.batch_first else 0
    program = torch.export.export(
        model, args, dynamic_shapes={"x": {batch_dim: Dim.AUTO}}
    )
    exported = program.module()
    assert_close(exported(*args), model(*args))
    other = inputs(spec, 5)  # the batch size is dynamic; the number of steps is not
    assert_close(exported(*other), model(*other))


@pytest.mark.parametrize("name", ALL)
def test_torch_jit_script_matches_eager(name):
    spec, model, args = make(name)
    scripted = torch.jit.script(model)
    assert_close(scripted(*args), model(*args))
    _, state = model(*args)
    assert_close(scripted(*args, state=state), model(*args, state=state))
    if spec.packing:
        lengths = lengths_of(3)
        assert_close(scripted(*args, lengths), model(*args, lengths))
        assert_close(scripted(*args, lengths.tolist()), model(*args, lengths))
    buffer = io.BytesIO()
    torch.jit.save(scripted, buffer)
    buffer.seek(0)
    loaded = torch.jit.load(buffer)
    assert_close(loaded(*args), model(*args))
    with pytest.raises(Exception, match="Expected"):
        scripted(args[0][..., :1] if spec.input.kind == "features" else args[0][0])


@pytest.mark.parametrize("name", CASES)
def test_onnx_export_runs_in_onnxruntime(name):
    pytest.importorskip("onnxscript", reason="torch.onnx.export needs onnxscript")
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
    spec, model, args = make(name)
    batch_dim = 1 if not spec.batch_first else 0
    onnx_program = torch.onnx.export(
        model,
        args,
        input_names=["x"],
        dynamic_shapes={"x": {batch_dim: "batch"}},
        dynamo=True,
        verbose=False,
    )
    session = ort.InferenceSession(
        onnx_program.model_proto.SerializeToString(),
        providers=["CPUExecutionProvider"],
    )
    for batch in (3, 5):
        x = inputs(spec, batch)[0]
        got = session.run(None, {"x": x.numpy()})
        expected = flat(model(x))
        assert len(got) == len(expected)
        for g, e in zip(got, expected):
            torch.testing.assert_close(torch.from_numpy(g), e, atol=1e-5, rtol=1e-4)


def test_generated_class_scripts_and_exports(load_generated):
    """A generated file's class deploys as the instantiated model does."""
    spec = rnnspec.parse(f"model Lm {{{TORCH['lstm-tokens-logits']}\n}}")[0]
    module = load_generated(rnnspec.generate(spec))  # from a file: script reads it
    torch.manual_seed(0)
    model = module.Lm().eval()
    x = inputs(spec, 2)[0]
    assert_close(torch.jit.script(model)(x), model(x))
    assert_close(torch.export.export(model, (x,)).module()(x), model(x))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["norm-lstm-everything"])
def test_torch_compile_of_the_cell_options_matches_eager(name):
    """Our kernel's plain steps under inductor (opt-in: dynamo skips nn.RNN
    subclasses unless allowed), padded input."""
    import torch._dynamo

    spec, model, _ = make(name)
    x = inputs(spec, 3)[0]
    torch._dynamo.config.allow_rnn = True
    try:
        assert_close(torch.compile(model)(x), model(x), atol=1e-4)
    finally:
        torch._dynamo.config.allow_rnn = False


@pytest.mark.slow
def test_torch_compile_matches_eager():
    """CPU inductor, one small model (compiling takes ~20 s on 2 cores)."""
    spec, model, args = make("lstm-tokens-logits")
    compiled = torch.compile(model)
    assert_close(compiled(*args), model(*args))
    other = inputs(spec, 3, steps=7)
    assert_close(compiled(*other), model(*other))
