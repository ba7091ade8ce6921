"""The statement table is the one source of the language's documentation: it covers
every statement, field and value of the language, and the README's table and the
JSON Schema's descriptions are made from it."""

from __future__ import annotations

import types
import typing

import pytest

from rnnspec.lang import ir, lower
from rnnspec.lang.config import json_schema
from rnnspec.lang.statements import (
    FILE_KEYWORDS,
    README_BEGIN,
    README_END,
    STATEMENTS,
    field_help,
    node_help,
    readme_table,
    statement,
    with_readme_table,
)
from tests.conftest import ROOT

#: The IR's nested objects, by the statement that writes them.
NODES = {
    "input": (ir.FeaturesInput, ir.TokensInput),
    "attention": (ir.AttentionSpec,),
    "head": (ir.LogitsHead, ir.LinearHead, ir.ClassesHead),
}


def _literals(annotation) -> set[str] | None:
    """The values of a `Literal` (inside Optional/Annotated) as the text writes them."""
    if typing.get_origin(annotation) is typing.Literal:
        return {str(a) for a in typing.get_args(annotation)}
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        found = [_literals(a) for a in typing.get_args(annotation)]
        found = [f for f in found if f is not None]
        return set().union(*found) if found else None
    if typing.get_origin(annotation) is typing.Annotated:
        return _literals(typing.get_args(annotation)[0])
    return None


def _is_bool(annotation) -> bool:
    args = typing.get_args(annotation)
    return annotation is bool or (bool in args and len(args) <= 2)


def _kinds(cls) -> list[str]:
    return sorted(_literals(cls.model_fields["kind"].annotation) or ())


def test_every_statement_the_language_accepts_has_an_entry():
    assert {doc.keyword for doc in STATEMENTS} == set(lower.STATEMENTS)
    assert {doc.keyword for doc in FILE_KEYWORDS} == {
        "rnnspec",
        "import",
        "model",
        "extends",
    }


def test_every_field_of_the_model_is_a_statement_or_an_option():
    written = {"name"} | {doc.field for doc in STATEMENTS}
    written |= {
        o.field for doc in STATEMENTS for o in doc.options if "." not in o.field
    }
    assert written == set(ir.ModelSpec.model_fields)


def test_the_nodes_listed_are_all_the_ir_has():
    nodes = {
        cls
        for cls in vars(ir).values()
        if isinstance(cls, type)
        and issubclass(cls, ir._Node)
        and cls not in (ir._Node, ir.ModelSpec)
    }
    assert nodes == {cls for classes in NODES.values() for cls in classes}


@pytest.mark.parametrize(
    "cls", [c for classes in NODES.values() for c in classes], ids=lambda c: c.__name__
)
def test_every_field_of_a_nested_object_is_a_value_or_an_option(cls):
    keyword = next(k for k, classes in NODES.items() if cls in classes)
    doc = statement(keyword)
    for kind in _kinds(cls):
        word = doc.word(kind)
        assert word is not None, f"{keyword} {kind} is not in the table"
        written = {"kind"} | ({word.size} if word.size else set())
        written |= {o.field.split(".")[1] for o in doc.options_for(kind)}
        assert written == set(cls.model_fields), f"{keyword} {kind}"


def _entries():
    """(where, the table's words, the IR annotation) for every field with a value."""
    for doc in STATEMENTS:
        if doc.keyword in NODES:
            for cls in NODES[doc.keyword]:
                for kind in _kinds(cls):
                    for option in doc.options_for(kind):
                        name = option.field.split(".")[1]
                        annotation = cls.model_fields[name].annotation
                        yield f"{doc.keyword} {kind} {name}", option.words, annotation
            continue
        fields = ir.ModelSpec.model_fields
        yield doc.keyword, doc.words, getattr(fields.get(doc.keyword), "annotation", 0)
        for option in doc.options:
            annotation = getattr(fields.get(option.field), "annotation", 0)
            yield f"{doc.keyword} {option.key}", option.words, annotation


@pytest.mark.parametrize("where, words, annotation", list(_entries()))
def test_the_words_of_every_value_are_the_irs(where, words, annotation):
    assert annotation != 0, f"{where}: not a field of the IR"
    written = {w.word for w in words}
    literals = _literals(annotation)
    if literals is not None:
        assert written == literals, where
    elif _is_bool(annotation):
        assert written == {"true", "false"}, where
    else:
        assert not written, where


@pytest.mark.parametrize("keyword", ["input", "attention", "head"])
def test_the_kinds_of_nested_statements_are_the_irs(keyword):
    kinds = {k for cls in NODES[keyword] for k in _kinds(cls)}
    if ir.ModelSpec.model_fields[keyword].default is None:
        kinds.add("none")  # `attention none`, `head none`: the field's None
    assert {w.word for w in statement(keyword).words} == kinds


def test_every_entry_says_what_it_means():
    for doc in (*STATEMENTS, *FILE_KEYWORDS):
        assert doc.help.endswith("."), doc.keyword
        assert doc.form, doc.keyword
        for word in doc.words:
            assert word.help, f"{doc.keyword} {word.word}"
        keys = [(o.key, o.kinds) for o in doc.options]
        assert len(keys) == len(set(keys)), doc.keyword
        for option in doc.options:
            assert option.help and option.default, f"{doc.keyword} {option.key}"
            for word in option.words:
                assert word.help, f"{doc.keyword} {option.key}={word.word}"
    assert all(doc.value or doc.words for doc in STATEMENTS)


# -- what is made from the table -------------------------------------------------------


def test_the_readme_table_is_the_tables():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert README_BEGIN in readme and README_END in readme
    assert with_readme_table(readme) == readme, (
        "README.md's language table is stale: python -m rnnspec.lang.statements "
        "README.md"
    )
    table = readme_table()
    for doc in STATEMENTS:
        assert f"| `{doc.keyword}` |" in table
        assert doc.help in table


def test_the_readme_table_escapes_pipes():
    for row in readme_table().splitlines()[2:]:
        assert row.replace("\\|", "").count("|") == 5, row


def test_the_schema_descriptions_are_the_tables():
    schema = json_schema()
    properties = schema["properties"]
    helps = field_help()
    for name in ir.ModelSpec.model_fields:
        assert properties[name]["description"] == helps[name], name
    for doc in STATEMENTS:
        assert doc.help in properties[doc.keyword]["description"]
    described = 0
    for keyword, classes in NODES.items():
        for cls in classes:
            definition = schema["$defs"][cls.__name__]
            kind = _kinds(cls)[0] if len(_kinds(cls)) == 1 else None
            for name, field in definition["properties"].items():
                expected = node_help(keyword, kind, name)
                assert expected and field["description"] == expected, (cls, name)
                described += 1
    assert described == sum(
        len(cls.model_fields) for classes in NODES.values() for cls in classes
    )
