"""A spec file and the files it imports → model blocks with their `extends` resolved.

`import "base.rnn"` (a path relative to the importing file) makes the models that
file defines available by name; a file sees its own models and those of the files it
imports directly. `model Wide extends Base { ... }` starts from Base's statements
(resolved in Base's own file, so bases may extend in turn) and replaces each one Wide
restates: a statement is replaced whole, options included. Every statement keeps the
span of the file and line where it is written, so diagnostics point there.

Nothing here validates statements: `rnnspec.lang.lower` lowers the merged blocks.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from rnnspec.lang import versions
from rnnspec.lang.diagnostics import (
    Diagnostic,
    Span,
    SpecError,
    did_you_mean,
    one_of,
)
from rnnspec.lang.source import decode_spec, read_spec_bytes, spec_text
from rnnspec.lang.syntax import ModelBlock, Statement, Value, parse_file_syntax
from rnnspec.lang.versions import KEYWORD, stated_version, upgraded

#: The statements allowed outside a model.
IMPORT = "import"
HEADERS = (KEYWORD, IMPORT)
#: What an imported path must end with.
SPEC_SUFFIX = ".rnn"
#: The most files one spec may pull in, itself included.
MAX_FILES = 256


@dataclass
class SourceFile:
    """One file that went into a program: its text (as the parser reads it, for the
    header hash and for carets) and what it defines and imports."""

    name: str  # as diagnostics show it
    text: str
    path: Path | None = None  # None: text given directly (`rnnspec.parse`)
    version: int = 1  # the language version it states
    version_line: int | None = None
    models: list[ModelBlock] = field(default_factory=list)
    imports: list[SourceFile] = field(default_factory=list)
    import_spans: dict[str, Span] = field(default_factory=dict)  # by file name
    error_lines: set[int] = field(default_factory=set)  # lines with syntax errors
    # An import failed, or a file was not read (newer language): a base that cannot
    # be found may be in it, so that is not reported again.
    incomplete: bool = False

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()


@dataclass
class Merged:
    """A model block with the statements it inherits: `block.statements` are all of
    them; `owners` says which block wrote each inherited statement (by its span)."""

    block: ModelBlock
    source: ModelBlock  # the block as written
    chain: list[ModelBlock]  # the block, its base, its base's base, ...
    owners: dict[Span, ModelBlock]

    def owner(self, statement: Statement) -> ModelBlock:
        return self.owners.get(statement.span, self.source)

    def statement_at(self, span: Span) -> Statement | None:
        """The statement a position is in: the last one starting before it on its
        line (two one-line models may share a line)."""
        found = None
        for statement in self.block.statements:
            start = statement.span
            if (start.file, start.line) == (span.file, span.line):
                if start.column <= span.column and (
                    found is None or found.span.column < start.column
                ):
                    found = statement
        return found


@dataclass
class Linked:
    """Every file of a program (imports before the files importing them; the main
    file last) and the problems found linking them."""

    main: SourceFile
    files: list[SourceFile]
    errors: list[Diagnostic]
    file_of: dict[int, SourceFile]  # id(block) → its file
    _merged: dict[int, Merged | None] = field(default_factory=dict)
    _resolving: list[ModelBlock] = field(default_factory=list)

    def scope(self, file: SourceFile) -> dict[str, ModelBlock]:
        """The models `file` can name: those of its direct imports, then its own."""
        names: dict[str, ModelBlock] = {}
        for imported in file.imports:
            for block in imported.models:
                names.setdefault(block.name, block)
        for block in file.models:
            names.setdefault(block.name, block)
        return names

    def merged(self, block: ModelBlock) -> Merged | None:
        """`block` with its base's statements (None: its base cannot be resolved;
        the reason is in `errors`, once)."""
        key = id(block)
        if key in self._merged:
            return self._merged[key]
        if block.base is None:
            result: Merged | None = Merged(block, block, [block], {})
        elif block in self._resolving:
            result = None  # reported where the cycle closes
        else:
            self._resolving.append(block)
            result = self._extend(block)
            self._resolving.pop()
        self._merged[key] = result
        return result

    def _extend(self, block: ModelBlock) -> Merged | None:
        file = self.file_of[id(block)]
        base = self.scope(file).get(block.base or "")
        if base is None:
            if not file.incomplete:
                self.errors.append(_unknown_base(block, self.scope(file)))
            return None
        if base in self._resolving:
            cycle = self._resolving[self._resolving.index(base) :]
            names = " extends ".join(b.name for b in [*cycle, base])
            what = "itself" if base is block else f"a cycle: {names}"
            self.errors.append(
                Diagnostic.at(block.base_span, f"model '{block.name}' extends {what}")
            )
            return None
        parent = self.merged(base)
        if parent is None:
            return None
        restated = {statement.keyword for statement in block.statements}
        kept = [s for s in parent.block.statements if s.keyword not in restated]
        owners = dict(parent.owners)
        for statement in kept:
            owners.setdefault(statement.span, parent.source)
        combined = dataclasses.replace(block, statements=kept + block.statements)
        return Merged(combined, block, [block, *parent.chain], owners)


def _unknown_base(block: ModelBlock, scope: dict[str, ModelBlock]) -> Diagnostic:
    others = [name for name in scope if name != block.name]
    hint = did_you_mean(block.base or "", others)
    if not hint:
        hint = (
            f"; it may extend {one_of(others)}"
            if others
            else "; import the file that defines it"
        )
    return Diagnostic.at(
        block.base_span, f"unknown model '{block.base}' to extend{hint}"
    )


def link(
    source: str,
    name: str = "<spec>",
    *,
    path: Path | None = None,
    base_dir: str | os.PathLike[str] | None = None,
) -> Linked:
    """Parse `source` (the file `name`, read from `path` if from a file) and every
    file it imports, relative to `base_dir` (default: `path`'s folder, else the
    working directory). Syntax errors and import problems are in `errors`."""
    if base_dir is None:
        base_dir = path.parent if path is not None else Path(".")
    loader = _Loader()
    main = SourceFile(name, spec_text(source), path)
    here = os.path.realpath(path) if path is not None else f"<{id(main)}>"
    loader.load(main, Path(base_dir), [(here, name)])
    return Linked(main, loader.order, loader.errors, loader.file_of)


class _Loader:
    def __init__(self) -> None:
        self.by_path: dict[str, SourceFile] = {}
        self.order: list[SourceFile] = []
        self.errors: list[Diagnostic] = []
        self.file_of: dict[int, SourceFile] = {}

    def load(
        self, file: SourceFile, directory: Path, stack: list[tuple[str, str]]
    ) -> SourceFile:
        """Parse `file`, then what it imports (depth first); `stack` holds (real
        path, name) of `file` and the files importing it, to tell a cycle."""
        syntax = parse_file_syntax(file.text, file.name)
        errors = list(syntax.errors)
        first_model = syntax.models[0].span.line if syntax.models else None
        file.version, statement = stated_version(syntax.headers, errors, first_model)
        file.version_line = statement.line if statement else None
        if file.version > versions.LANGUAGE_VERSION:  # a newer language: only say so
            self.errors.extend(errors)
            self.order.append(file)
            file.incomplete = True
            return file
        if file.version < versions.LANGUAGE_VERSION:  # read through the upgrades
            syntax = parse_file_syntax(upgraded(file.text, file.version), file.name)
            errors = list(syntax.errors)
        file.error_lines = {d.line for d in errors}
        file.incomplete = bool(syntax.errors)  # a block may be missing
        self.errors.extend(errors)
        file.models = syntax.models
        for block in syntax.models:
            self.file_of[id(block)] = file
        seen: dict[str, int] = {}
        for header in syntax.headers:
            if header.line in file.error_lines:
                continue  # the syntax error says what is wrong there
            if header.keyword == KEYWORD:
                continue  # `stated_version` has checked it
            if first_model is not None and header.line > first_model:
                self.errors.append(
                    Diagnostic.at(
                        header.span,
                        f"'{header.keyword}' must come before the first model",
                    )
                )
            if header.keyword == IMPORT:
                imported = self._import(header, file, directory, stack, seen)
                if imported is None or imported.incomplete:
                    file.incomplete = True
                if imported is not None and imported not in file.imports:
                    file.imports.append(imported)
                    file.import_spans[imported.name] = header.span
            else:
                self.errors.append(_unknown_header(header))
        self._check_names(file)
        self.order.append(file)
        return file

    def _import(
        self,
        header: Statement,
        importer: SourceFile,
        directory: Path,
        stack: list[tuple[str, str]],
        seen: dict[str, int],
    ) -> SourceFile | None:
        value = _path_value(header, self.errors)
        if value is None:
            return None
        target = directory / str(value.value)
        real = os.path.realpath(target)
        if real in seen:
            self.errors.append(
                Diagnostic.at(
                    value.span,
                    f"'{value.value}' is already imported on line {seen[real]}",
                )
            )
            return None
        seen[real] = header.line
        reals = [r for r, _ in stack]
        if real in reals:
            names = [n for _, n in stack[reals.index(real) :]]
            cycle = " → ".join([*names, names[0]])
            self.errors.append(Diagnostic.at(value.span, f"import cycle: {cycle}"))
            return None
        if real in self.by_path:
            return self.by_path[real]
        if len(self.by_path) + 1 >= MAX_FILES:
            self.errors.append(
                Diagnostic.at(value.span, f"more than {MAX_FILES} files imported")
            )
            return None
        name = _import_name(importer.name, str(value.value))
        text = self._read(target, name, value, importer)
        if text is None:
            return None
        file = SourceFile(name, text, target)
        self.by_path[real] = file
        return self.load(file, target.parent, [*stack, (real, name)])

    def _read(
        self, target: Path, name: str, value: Value, importer: SourceFile
    ) -> str | None:
        try:
            data = read_spec_bytes(target, regular_only=True)
        except (OSError, ValueError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc)
            others = [
                p.name
                for p in _siblings(target.parent)
                if importer.path is None or not _same(p, importer.path)
            ]
            hint = did_you_mean(target.name, others)
            self.errors.append(
                Diagnostic.at(
                    value.span, f"cannot import '{value.value}': {reason}{hint}"
                )
            )
            return None
        try:
            return spec_text(decode_spec(data, name))
        except SpecError as error:
            self.errors.extend(dataclasses.replace(d, file=name) for d in error.errors)
            if error.source is not None:
                self.order.append(SourceFile(name, error.source, target))
            return None

    def _check_names(self, file: SourceFile) -> None:
        """A name defined by two imports, or by an import and the file itself."""
        where: dict[str, SourceFile] = {}
        for imported in file.imports:
            for block in imported.models:
                other = where.setdefault(block.name, imported)
                if other is not imported:
                    self.errors.append(
                        Diagnostic.at(
                            file.import_spans.get(imported.name),
                            f"{imported.name} defines model '{block.name}', which "
                            f"{other.name} defines too",
                        )
                    )
        for block in file.models:
            if block.name in where:
                self.errors.append(
                    Diagnostic.at(
                        block.name_span,
                        f"model '{block.name}' is also defined in "
                        f"{where[block.name].name}, which this file imports; "
                        "rename one",
                    )
                )


def _path_value(header: Statement, errors: list[Diagnostic]) -> Value | None:
    """The quoted `.rnn` path of an `import` statement."""
    arguments = header.arguments
    value = arguments[0] if len(arguments) == 1 else None
    if not isinstance(value, Value) or not value.quoted or not value.value:
        errors.append(
            Diagnostic.at(
                header.span, 'expected import "FILE.rnn", a path in double quotes'
            )
        )
        return None
    if not str(value.value).endswith(SPEC_SUFFIX):
        errors.append(
            Diagnostic.at(
                value.span,
                f"an imported file must end in {SPEC_SUFFIX}, got '{value.value}'",
            )
        )
        return None
    return value


def _import_name(importer: str, written: str) -> str:
    """The imported file's name for messages: beside the importer's, as written."""
    if importer.startswith("<") or os.path.isabs(written):
        return written
    return os.path.normpath(os.path.join(os.path.dirname(importer), written))


def _same(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _siblings(directory: Path) -> list[Path]:
    try:
        return sorted(directory.glob(f"*{SPEC_SUFFIX}"))[:1000]
    except OSError:
        return []


def _unknown_header(header: Statement) -> Diagnostic:
    hint = did_you_mean(header.keyword, HEADERS)
    if not hint:
        hint = f"; outside a model only {one_of(HEADERS)} and 'model' may stand"
    return Diagnostic.at(
        header.span, f"unknown statement '{header.keyword}' outside a model{hint}"
    )
