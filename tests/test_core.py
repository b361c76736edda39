"""One way through the core (issue 24): the package's import graph has no cycle, settings given
override a preset's budget, and the Python API makes the run the CLI makes."""

import ast
import json
from pathlib import Path

import pytest

import makemore as mm
from makemore.cli import main

PACKAGE = Path(mm.__file__).parent


def import_graph() -> dict[str, set[str]]:
    """module -> the package's modules it imports, read from the source with ast (so that an
    import inside a function, a lazy one, counts as much as one at the top)."""
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
        modules[".".join(parts)] = path
    graph = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([base] if base else []))
                for alias in node.names:
                    target = next((c for c in (f"{base}.{alias.name}", base) if c in modules), None)
                    if target is not None and target != name:
                        graph[name].add(target)
            elif isinstance(node, ast.Import):
                graph[name].update(a.name for a in node.names if a.name in modules and a.name != name)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle of imports, ignoring a package's __init__ importing its own modules (a package's
    face re-exports what its modules define; the modules never need the face)."""
    def edges(m):
        return {n for n in graph[m] if not (n == m.rsplit(".", 1)[0] and m.startswith(n + "."))}

    state, stack = {}, []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for n in sorted(edges(m)):
            if state.get(n) == 1:
                return stack[stack.index(n):] + [n]
            if n not in state:
                found = visit(n)
                if found:
                    return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state:
            found = visit(m)
            if found:
                return found
    return None


def test_the_import_graph_has_no_cycle():
    graph = import_graph()
    assert "makemore.cli" in graph and "makemore.launch" in graph  # the walk sees the package
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_the_cycle_finder_finds_a_lazy_import_cycle():
    """The check above could not pass by looking away: a cycle closed by an import inside a
    function is one."""
    graph = {"p.a": {"p.b"}, "p.b": {"p.c"}, "p.c": {"p.a"}, "p": {"p.a"}}
    assert find_cycle(graph) == ["p.a", "p.b", "p.c", "p.a"]
    source = "def f():\n    from .cli import main\n"
    tree = ast.parse(source)
    assert any(isinstance(n, ast.ImportFrom) and n.module == "cli" and n.level == 1 for n in ast.walk(tree))


def test_nothing_but_the_entry_point_imports_the_cli():
    graph = import_graph()
    importers = sorted(m for m, targets in graph.items()
                       if any(t == "makemore.cli" or t.startswith("makemore.cli.") for t in targets)
                       and not m.startswith("makemore.cli"))
    assert importers == ["makemore.__main__"]


def test_no_module_is_over_500_lines():
    long = {str(p.relative_to(PACKAGE)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > 500}
    assert not long


def test_steps_given_override_a_presets_budget(words_file, tmp_path, capsys):
    """`--preset best --steps N`, a quick look at the best recipe, trains exactly N steps (it
    re-planned itself to fill the preset's 19-minute budget)."""
    out = tmp_path / "best"
    assert main(["train", "--data", str(words_file), "--preset", "best", "--steps", "4", "--eval-examples", "200",
                 "--out", str(out), "--quiet"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 4 and summary["planned_steps"] == 4
    assert "budget" not in summary and json.loads((out / "config.json").read_text())["train"]["budget"] == 0
    _, cfg = mm.make_configs("best", steps=4)
    assert cfg.budget == 0 and mm.make_configs("best")[1].budget > 0
    assert mm.make_configs("best", steps=4, budget=30)[1].budget == 30  # both given: the budget plans


def test_the_api_makes_the_budget_run_the_cli_makes(names_path, tmp_path, monkeypatch, capsys):
    """mm.train(corpus, budget=S) chooses the recipe the CLI's `train --budget S` chooses, counts
    the same Kneser-Ney model inside the budget, distils from it and mixes in the same count
    model (with a spare core, the learned interpolation trained beside where it beats Kneser-Ney)."""
    monkeypatch.setenv("MAKEMORE_DATA_DIR", str(names_path.parent))
    cli_out, api_out = tmp_path / "cli", tmp_path / "api"
    assert main(["train", "--data", "names", "--budget", "6", "--out", str(cli_out), "--quiet"]) == 0
    corpus = mm.load_corpus("names")
    result = mm.train(corpus, budget=6, out=api_out, progress=False)
    cli = json.loads((cli_out / "summary.json").read_text())
    from makemore.recipes import choose

    assert result.summary["recipe"] == cli["recipe"]
    assert cli["recipe"]["budget"] == choose(6, vocab_size=corpus.vocab.size)["budget"]
    cli_config = json.loads((cli_out / "config.json").read_text())
    api_config = json.loads((api_out / "config.json").read_text())
    for config in (cli_config, api_config):
        config["data"].pop("source")
        config["train"].pop("budget")  # what is left of 6 s after counting, measured each time
    assert api_config == cli_config
    assert cli_config["train"]["teacher"] > 0  # the counted model teaches
    cli_mix, api_mix = (json.loads((d / "mix.json").read_text()) for d in (cli_out, api_out))
    assert cli_mix["count_model"] == api_mix["count_model"]
    if cli_mix["count_model"] == "kneser_ney":
        assert cli_mix["ngram_context"] == api_mix["ngram_context"] == 5
        assert cli_mix["discount"] == pytest.approx(api_mix["discount"])
    else:  # trained beside the model, and chosen where it scored below Kneser-Ney 5's 1.9820
        assert cli_mix["count_model"] == "learned" and cli_mix["learned_apart"] and api_mix["learned_apart"]
        assert max(cli_mix["ngram_dev_loss"], api_mix["ngram_dev_loss"]) < 1.9821
    assert api_mix["mix_dev_loss"] <= min(api_mix["mlp_dev_loss"], api_mix["ngram_dev_loss"]) + 1e-9
    assert result.summary["result"]["predictor"] == api_mix["result"] and "result" in cli
