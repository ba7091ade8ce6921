"""Generated source: golden files, determinism, standalone, lint-clean, == runtime."""

from __future__ import annotations

import ast
import difflib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import rnnspec
from rnnspec.compile.nnsource import NN_DIR, index
from rnnspec.lang.ir import reserved_names
from tests.conftest import BUILDABLE, EXAMPLES, GENERATED, ROOT, example_params

REFRESH = "rnnspec build examples/*.rnn"
ALLOWED_IMPORTS = {"math", "typing", "torch", "torch.nn.functional", "torch.nn"}


def build(path):
    text = path.read_text(encoding="utf-8")
    return rnnspec.generate(rnnspec.parse(text), spec_file=path.name, source=text)


@pytest.mark.parametrize("path", example_params())
def test_generated_files_are_fresh(path):
    golden = GENERATED / f"{path.stem}.py"
    fresh = build(path)
    current = golden.read_text(encoding="utf-8") if golden.exists() else ""
    if fresh != current:
        diff = "".join(
            difflib.unified_diff(
                current.splitlines(keepends=True),
                fresh.splitlines(keepends=True),
                f"generated/{path.stem}.py (checked in)",
                f"generated/{path.stem}.py (from {path.name})",
            )
        )
        pytest.fail(f"generated/ is stale; refresh with `{REFRESH}`\n{diff}")


@pytest.mark.parametrize("path", example_params())
def test_generation_is_deterministic(path):
    assert build(path) == build(path)


@pytest.mark.parametrize("path", example_params())
def test_generated_imports_only_torch_and_stdlib(path):
    tree = ast.parse(build(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0
            modules = [node.module]
        else:
            continue
        for module in modules:
            assert module in ALLOWED_IMPORTS or module.split(".")[0] in (
                sys.stdlib_module_names
            ), module
    header = build(path).splitlines()[:3]
    assert path.name in header[0] and rnnspec.__version__ in header[0]
    digest = __import__("hashlib").sha256(path.read_bytes()).hexdigest()
    assert header[2] == f"# spec sha256: {digest}"


@pytest.mark.parametrize("path", example_params())
def test_generated_equals_runtime(path, load_generated):
    """One source of truth: same seed → same state dict; same inputs → same outputs."""
    specs = rnnspec.parse_file(path)
    module = load_generated(build(path))
    for spec in specs:
        torch.manual_seed(7)
        runtime = rnnspec.instantiate(spec).eval()
        torch.manual_seed(7)
        generated = getattr(module, spec.name)().eval()
        a, b = runtime.state_dict(), generated.state_dict()
        assert list(a) == list(b)
        for key in a:
            assert torch.equal(a[key], b[key]), key
        inputs = example_inputs(spec)
        out_a, _ = runtime(*inputs[0], **inputs[1])
        out_b, _ = generated(*inputs[0], **inputs[1])
        assert torch.equal(out_a, out_b)


def example_inputs(spec):
    torch.manual_seed(0)
    batch, steps = 3, 6
    if spec.encoder == "spinn":
        from rnnspec.train.trees import Vocab, batch_trees, parse_tree

        texts = ["( ( a b ) c )", "( a ( b ( c d ) ) )", "( a b )"]
        trees = [parse_tree(text) for text in texts]
        vocab = Vocab(tok for tokens, _ in trees for tok in tokens)
        tokens, transitions = batch_trees(trees, vocab)
        args = (tokens, transitions)
        if spec.head is not None and spec.head.pair:
            args = args + args
        return args, {}
    if spec.input.kind == "tokens":
        x = torch.randint(0, spec.input.vocab, (batch, steps))
    else:
        x = torch.randn(batch, steps, spec.input.size)
    if not spec.batch_first:
        x = x.transpose(0, 1)
    kwargs = {"lengths": torch.tensor([6, 2, 4])} if spec.packing else {}
    return (x,), kwargs


#: ruff beside the running Python (a venv's, as the dev extra installs it), or on PATH
RUFF = Path(sys.executable).with_name("ruff")


@pytest.mark.skipif(
    shutil.which("ruff") is None and not RUFF.exists(),
    reason="ruff not installed (the dev extra installs it)",
)
def test_generated_files_are_formatted_and_lint_clean(tmp_path):
    ruff = str(RUFF) if RUFF.exists() else shutil.which("ruff")
    for path in BUILDABLE:
        (tmp_path / f"{path.stem}.py").write_text(build(path))
    config = ["--config", str(ROOT / "pyproject.toml")]
    check = subprocess.run(
        [ruff, "check", *config, str(tmp_path)], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout
    fmt = subprocess.run(
        [ruff, "format", "--check", *config, str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert fmt.returncode == 0, fmt.stdout


def test_generated_file_runs_without_rnnspec(tmp_path):
    """Block rnnspec's import entirely: the generated module needs only torch."""
    path = EXAMPLES[0]
    (tmp_path / "standalone.py").write_text(build(path))
    (spec,) = rnnspec.parse_file(path)[:1]
    script = (
        "import sys; sys.modules['rnnspec'] = None\n"
        "import torch, standalone\n"
        f"model = standalone.{spec.name}()\n"
        "print(sum(p.numel() for p in model.parameters()))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    expected = sum(p.numel() for p in rnnspec.instantiate(spec).parameters())
    assert int(result.stdout) == expected


def test_nn_modules_import_only_what_generated_files_may():
    for path in NN_DIR.glob("*.py"):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.Import):
                assert all(a.name in ALLOWED_IMPORTS for a in node.names), path
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                assert node.module in ALLOWED_IMPORTS, (path, node.module)


def test_model_names_cannot_shadow_generated_definitions():
    definitions, imports = index()
    assert set(definitions) | set(imports) <= reserved_names()
    for name in ("RecurrentModel", "packed_torch_forward", "Tensor", "nn"):
        source = f"model {name} {{\n input features 3\n cell gru\n hidden 2\n}}\n"
        with pytest.raises(rnnspec.SpecError, match="which generated code uses"):
            rnnspec.parse(source)


def test_generate_rejects_empty_input():
    with pytest.raises(ValueError, match="Expected at least one ModelSpec"):
        rnnspec.generate([])


#: generated/char_rnn.py before the cell options existed (issue 13): a plain LSTM's
#: file must not grow because other specs can ask for more.
CHAR_RNN_BEFORE_OPTIONS = (327, 12_557)  # (lines, bytes) at ca12d9e
#: what the step API (issue 15), every model's, adds to it: RecurrentModel.step,
#: its checks and `step_cells` (505 lines, 20,497 bytes in all when it came)
STEP_API = (180, 8_000)


def test_a_plain_lstm_file_holds_only_what_it_uses():
    text = (GENERATED / "char_rnn.py").read_text(encoding="utf-8")
    lines, size = CHAR_RNN_BEFORE_OPTIONS
    assert len(text.splitlines()) <= 1.05 * lines + STEP_API[0]
    assert len(text.encode("utf-8")) <= 1.05 * size + STEP_API[1]
    for option_code in ("residual", "initial_state", "forget_bias", "ln_"):
        assert option_code not in text, option_code
    for other_step in ("def step_kernel_stack", "def step_attention"):
        assert other_step not in text, other_step  # their models' only
