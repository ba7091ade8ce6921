"""Deployment of the regularizers (design section 9): an eval-mode module of every
option, on every kernel class that takes it, exports with torch.jit.script,
torch.export and ONNX (run in onnxruntime), its outputs and states equal to eager.

In eval recurrent dropout, weight drop and locked dropout are the identity and
zoneout blends by its rate (its expectation), so what exports is the eval step.
"""

import warnings

import pytest
import torch

from rnnspec.nn import (
    CustomGRU,
    CustomLSTM,
    CustomRNN,
    LayerNormGRU,
    LayerNormLSTM,
    PeepholeLSTM,
)

N_IN, HID, STEPS = 3, 5, 4
CELLS = {
    "lstm": (CustomLSTM, {}),
    "gru": (CustomGRU, {}),
    "rnn": (CustomRNN, {}),
    "peephole": (PeepholeLSTM, {}),
    "lnlstm": (LayerNormLSTM, {"peephole": True}),
    "lngru": (LayerNormGRU, {}),
}
OPTIONS = {
    "recurrent_dropout": {"recurrent_dropout": 0.3},
    "weight_drop": {"weight_drop": 0.5},
    "zoneout": {"zoneout": 0.3},
    "zoneout_cell": {"zoneout": 0.2, "zoneout_cell": 0.4},
    "locked_dropout": {"dropout": 0.3, "locked_dropout": True},
    # the options that are the identity in eval, together (ONNX takes seconds)
    "identities": {
        "recurrent_dropout": 0.3,
        "weight_drop": 0.5,
        "dropout": 0.3,
        "locked_dropout": True,
    },
}
LSTMS = ("lstm", "peephole", "lnlstm")
CASES = [
    (cell, option)
    for cell in CELLS
    for option in OPTIONS
    if option != "identities" and (option != "zoneout_cell" or cell in LSTMS)
]
ONNX_CASES = [
    (cell, option, "custom")
    for cell in CELLS
    for option in ("identities", "zoneout", "zoneout_cell")
    if option != "zoneout_cell" or cell in LSTMS
] + [
    ("lstm", "identities", "auto"),
    ("gru", "identities", "auto"),
    ("rnn", "identities", "auto"),
    ("lstm", "zoneout_cell", "auto"),
]


def build(cell, option, impl="custom"):
    """A float32 eval-mode module: 2 layers, both directions, batch first; layer
    norms and peepholes drawn away from their init so that they matter."""
    cls, extra = CELLS[cell]
    torch.manual_seed(0)
    module = cls(
        N_IN,
        HID,
        2,
        batch_first=True,
        bidirectional=True,
        impl=impl,
        **extra,
        **OPTIONS[option],
    )
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "_ln_" in name or name.startswith("weight_ch"):
                p.uniform_(0.5, 1.5)
    return module.eval()


def flat(output):
    if isinstance(output, torch.Tensor):
        return [output]
    return [t for part in output for t in flat(part)]


def assert_same(got, expected):
    got, expected = flat(got), flat(expected)
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e)


def x_of(batch):
    return torch.randn(batch, STEPS, N_IN)


@pytest.mark.parametrize("cell,option", CASES)
def test_torch_jit_script_matches_eager(cell, option):
    module = build(cell, option)
    scripted = torch.jit.script(module)
    x = x_of(3)
    lengths = torch.tensor([2, 4, 1])
    assert_same(scripted(x), module(x))
    assert_same(scripted(x, lengths=lengths), module(x, lengths=lengths))


@pytest.mark.parametrize("cell,option", CASES)
def test_torch_export_matches_eager(cell, option):
    module = build(cell, option)
    x = x_of(3)
    exported = torch.export.export(module, (x,)).module()
    assert_same(exported(x), module(x))


@pytest.mark.parametrize("cell,option,impl", ONNX_CASES)
def test_onnx_export_runs_in_onnxruntime(cell, option, impl):
    """Per cell, the options that are the identity in eval together, and zoneout.
    impl auto exports torch's kernel where the options allow it (all but zoneout,
    in eval), ours otherwise."""
    pytest.importorskip("onnxscript", reason="torch.onnx.export needs onnxscript")
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
    module = build(cell, option, impl)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            module,
            (x_of(3),),
            input_names=["x"],
            dynamic_shapes={"input": {0: "batch"}},
            dynamo=True,
            verbose=False,
        )
    session = ort.InferenceSession(
        program.model_proto.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    for batch in (3, 5):
        x = x_of(batch)
        got = session.run(None, {"x": x.numpy()})
        assert_same([torch.from_numpy(g) for g in got], module(x))
