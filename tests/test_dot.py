"""`--emit dot` and `--diagram`: Graphviz pictures of the layer graph, pinned, escaped and parsed by `dot` itself."""

from __future__ import annotations

import difflib
import html
import json
import re
import shutil
import subprocess

import pytest
from regenerate_golden import DOT_CASES, GOLDEN, expected_dot
from test_cli import run_here

import nncompile
from nncompile import dot

HAS_DOT = shutil.which("dot") is not None
needs_dot = pytest.mark.skipif(not HAS_DOT, reason="Graphviz's dot program is not installed")

NESTED = """
block Inner(w) {
    input x
    x -> Linear(w) -> ReLU
}
block Outer(w) {
    input x
    h = x -> Inner(w) -> Inner(w)
    (x, h) -> Add
}
model Nested {
    input x [8]
    y = x -> Outer(8) -> Linear(2)
    loss MSE
}
"""


def parsed(text: str) -> dict:
    """The graph as Graphviz reads it (dot -Tjson), so a test sees what dot sees."""
    result = subprocess.run(["dot", "-Tjson"], input=text, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert "Warning" not in result.stderr and "Error" not in result.stderr, result.stderr
    return json.loads(result.stdout)


def nodes_and_edges(graph: dict) -> tuple[dict, list[tuple[str, str]]]:
    objects = graph.get("objects", [])
    nodes = {o["name"]: o for o in objects if "nodes" not in o and "subgraphs" not in o and "edges" not in o}
    clusters = [o for o in objects if o["name"].startswith("cluster")]
    nodes = {name: o for name, o in nodes.items() if o not in clusters}
    edges = [(objects[e["tail"]]["name"], objects[e["head"]]["name"]) for e in graph.get("edges", [])]
    return nodes, edges


@pytest.mark.parametrize("name", DOT_CASES)
def test_dot_matches_golden(name):
    golden = GOLDEN / f"{name}.dot"
    assert golden.exists(), "missing; run: python tests/regenerate_golden.py"
    actual, expected = expected_dot(GOLDEN / f"{name}.nn"), golden.read_text(encoding="utf-8")
    if actual != expected:
        diff = "".join(difflib.unified_diff(expected.splitlines(True), actual.splitlines(True), "golden", "generated"))
        pytest.fail(f"DOT differs from {golden.name}; if intended, run: python tests/regenerate_golden.py\n{diff}")
    assert expected_dot(GOLDEN / f"{name}.nn") == actual  # deterministic


def test_residual_dot_has_a_node_per_layer_block_clusters_and_marked_ends():
    text = expected_dot(GOLDEN / "residual.nn")
    model = nncompile.compile_models((GOLDEN / "residual.nn").read_text(), "residual.nn")[0]
    for node in model.nodes:
        assert text.count(f'    "{node.name}" [label=') == 1, node.name
    assert '"input:x" [label=<<b>x</b><br/>input [64]>, shape=invhouse' in text
    assert '"output:logits" [label=<<b>logits</b><br/>output [10]<br/>loss CrossEntropy>, shape=house' in text
    assert 'subgraph "cluster:residual_1" {' in text and 'subgraph "cluster:residual_2" {' in text
    assert "<b>linear_1</b><br/>Linear<br/>[64] · 4,160 params" in text  # name, type, output shape, parameters
    assert "<b>relu_1</b> <i>(stem)</i>" in text  # the statement name the user gave the value
    assert 'tooltip="residual_1.linear_1 = Linear(64, init=he_normal)  (residual.nn:4)"' in text
    assert "21,450 params" in text


@needs_dot
@pytest.mark.parametrize("name", DOT_CASES)
def test_graphviz_reads_every_layer_and_edge(name):
    models = nncompile.compile_models((GOLDEN / f"{name}.nn").read_text(), f"{name}.nn")
    nodes, edges = nodes_and_edges(parsed(expected_dot(GOLDEN / f"{name}.nn")))
    prefix = (lambda m: "") if len(models) == 1 else (lambda m: f"{m.name}/")
    expected_nodes, expected_edges = set(), []
    for model in models:
        p = prefix(model)
        expected_nodes |= {f"{p}input:{i.name}" for i in model.inputs} | {f"{p}output:{o}" for o in model.outputs}
        expected_nodes |= {p + n.name for n in model.nodes}
        ids = {i.name: f"{p}input:{i.name}" for i in model.inputs} | {n.name: p + n.name for n in model.nodes}
        expected_edges += [(ids[v], p + n.name) for n in model.nodes for v in n.inputs]
        expected_edges += [(ids[model.output_values[o]], f"{p}output:{o}") for o in model.outputs]
    assert set(nodes) == expected_nodes
    assert sorted(edges) == sorted(expected_edges)


@needs_dot
def test_nested_block_instances_are_nested_clusters():
    text = dot.to_dot(nncompile.compile_models(NESTED, "nested.nn"), "nested.nn")
    graph = parsed(text)
    objects = graph["objects"]
    by_name = {o["name"]: o for o in objects}
    outer, inner = by_name["cluster:outer_1"], by_name["cluster:outer_1.inner_2"]
    assert {objects[i]["name"] for i in inner["nodes"]} == {"outer_1.inner_2.linear_1", "outer_1.inner_2.relu_1"}
    assert {objects[i]["name"] for i in outer["subgraphs"]} == {"cluster:outer_1.inner_1", "cluster:outer_1.inner_2"}
    assert "outer_1.add_1" in {objects[i]["name"] for i in outer["nodes"]}
    assert "linear_1" not in {objects[i]["name"] for i in outer["nodes"]}


NASTY = "a\"b\\c<d>&e'\n}\u202e//"


def _rename(model, rename):
    """Every name in the model passed through `rename`, as if the user had chosen it."""
    for node in model.nodes:
        node.name = rename(node.name)
        node.inputs = [rename(v) for v in node.inputs]
        node.block = rename(node.block) if node.block else None
        node.source = rename(node.source)
    for item in model.inputs:
        item.name = rename(item.name)
    model.blocks = {rename(k): rename(v) for k, v in model.blocks.items()}
    model.aliases = {rename(k): rename(v) for k, v in model.aliases.items()}
    model.output_values = {rename(k): rename(v) for k, v in model.output_values.items()}
    model.outputs = [rename(o) for o in model.outputs]
    model.name = rename(model.name)
    for term in model.losses:
        term.output = rename(term.output)
    model.__dict__.pop("_by_name", None)


def test_every_label_is_escaped():
    models = nncompile.compile_models((GOLDEN / "residual.nn").read_text(), "residual.nn")
    _rename(models[0], lambda name: name.replace("_", NASTY))
    text = dot.to_dot(models, f"evil{NASTY}.nn")
    # Nothing a name holds can start a line: every line is one of the statements the writer makes.
    starts = ("//", "digraph ", "}", "subgraph ", "graph [", "node [", "edge [", "label=<", '"')
    assert all(line.strip().startswith(starts) for line in text.splitlines()), text
    assert "\u202e" not in text and "<U+202E>" in text and "<U+000A>" in text
    labels = re.findall(r"label=<(.*?)>(?:, |\]|;)", text)
    assert len(labels) == len(models[0].nodes) + len(models[0].blocks) + 3  # + input, output, graph title
    for label in labels:
        for tag in ("b", "i", "br/", "/b", "/i"):
            label = label.replace(f"<{tag}>", "")
        assert "<" not in label and ">" not in label and '"' not in label and "'" not in label, label


@needs_dot
def test_graphviz_reads_escaped_names_back_exactly():
    models = nncompile.compile_models((GOLDEN / "residual.nn").read_text(), "residual.nn")
    _rename(models[0], lambda name: name.replace("_", NASTY))
    model = models[0]
    nodes, edges = nodes_and_edges(parsed(dot.to_dot(models, f"evil{NASTY}.nn")))
    shown = dot._printable  # what stays of a name: every character, the unprintable ones as <U+XXXX>

    def ident(name):  # Graphviz keeps the escaped backslash of a quoted ID as written: `\\` (safe, and still unique)
        return shown(name).replace("\\", "\\\\")

    assert set(nodes) == {ident(n.name) for n in model.nodes} | {
        ident("input:" + model.inputs[0].name),
        ident("output:" + model.outputs[0]),
    }
    assert len(edges) == sum(len(n.inputs) for n in model.nodes) + 1
    for node in model.nodes:
        label = nodes[ident(node.name)]["label"]
        short = node.name.removeprefix(f"{node.block}.") if node.block else node.name
        assert f"<b>{html.escape(shown(short))}</b>" in label
        assert nodes[ident(node.name)]["tooltip"].startswith(ident(node.name) + " = ")


# ---- the command -------------------------------------------------------------------------------------------------


def test_emit_dot_to_stdout_and_file(tmp_path):
    code, out, err = run_here(GOLDEN / "residual.nn", "--emit", "dot")
    assert code == 0 and err == ""
    assert out.startswith("// ResidualMLP: compiled by nncompile from residual.nn\ndigraph ")
    target = tmp_path / "graph.dot"
    assert run_here(GOLDEN / "residual.nn", "--emit", "dot", "-o", target)[0] == 0
    assert target.read_text() == out


@needs_dot
@pytest.mark.parametrize(
    ("suffix", "signature"), [(".svg", b"<?xml"), (".png", b"\x89PNG\r\n\x1a\n"), (".pdf", b"%PDF-")]
)
def test_diagram_renders_each_format(tmp_path, suffix, signature):
    target = tmp_path / f"model{suffix.upper() if suffix == '.pdf' else suffix}"
    code, out, err = run_here(GOLDEN / "two_inputs.nn", "--diagram", target)
    assert (code, out, err) == (0, "", "")
    data = target.read_bytes()
    assert data.startswith(signature) and len(data) > 1000
    if suffix == ".svg":
        assert "TwoInputs" in data.decode() and "Gated" in data.decode()


def test_diagram_without_graphviz_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda *args, **kwargs: None)
    target = tmp_path / "model.svg"
    code, out, err = run_here(GOLDEN / "residual.nn", "--diagram", target)
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and err.startswith(f"{target}: error: cannot draw the diagram: ")
    assert "install Graphviz" in err and "apt-get install graphviz" in err
    assert not target.exists() and list(tmp_path.iterdir()) == []


def test_diagram_reports_a_failing_dot(tmp_path, monkeypatch):
    fake = tmp_path / "dot"
    fake.write_text("#!/bin/sh\necho 'Error: something broke' >&2\nexit 3\n")
    fake.chmod(0o755)
    monkeypatch.setattr(shutil, "which", lambda *args, **kwargs: str(fake))
    code, _, err = run_here(GOLDEN / "residual.nn", "--diagram", tmp_path / "model.png")
    assert code == 1 and err == f"{tmp_path / 'model.png'}: error: cannot draw the diagram: dot failed (exit 3): " + (
        "Error: something broke\n"
    )
    assert not (tmp_path / "model.png").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--diagram", "model.jpg"], "argument --diagram: expected a file name ending in .svg, .png or .pdf"),
        (["--diagram", "model.svg", "-o", "x.py"], "--diagram writes the picture; it cannot be combined with -o"),
        (["--diagram", "model.svg", "--summary"], "argument --summary: not allowed with argument --diagram"),
        (["--emit", "dot", "--diagram", "m.svg"], "argument --diagram: not allowed with argument --emit"),
    ],
)
def test_diagram_usage_errors(tmp_path, args, message):
    code, _, err = run_here(GOLDEN / "residual.nn", *args)
    assert code == 2 and message in err


def test_diagram_of_a_broken_file_is_a_located_error(tmp_path):
    bad = tmp_path / "bad.nn"
    bad.write_text("model M {\n    input [4]\n    Linear(2, bogus=1)\n}\n")
    code, _, err = run_here(bad, "--diagram", tmp_path / "m.svg")
    assert code == 1 and err.startswith(f"{bad}:3:") and "bogus" in err
    assert not (tmp_path / "m.svg").exists()
