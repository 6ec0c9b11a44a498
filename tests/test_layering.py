"""The architecture's rules: the core imports no torch and no executor; widgets use only the public
API (modules and the engine's public attributes); pie_lab never imports widgets or notebooks."""
import ast
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
CORE_MAY_IMPORT = {"pie_lab.core", "pie_lab.config", "pie_lab.errors", "pie_lab.sampling"}
# what widgets may read off an engine: its public properties and methods, never its parts
ENGINE_PUBLIC = {"config", "spec", "metrics", "clock", "max_model_len", "executor_name", "emulated_link",
                 "gpu_capacity", "gpu_limit", "host_capacity", "block_bytes", "sequences", "add_request",
                 "update", "step", "has_unfinished", "check_blocks", "close"}
PUBLIC = {"pie_lab", "pie_lab.live", "pie_lab.sources", "pie_lab.core.trace", "pie_lab.workloads",
          "pie_lab.config_io", "pie_lab.export", "pie_lab.tune", "pie_lab.bench", "pie_lab.sim.hardware"}


def imports(path: pathlib.Path) -> set[str]:
    """Every module `path` imports, at the top or inside functions; relative imports resolved."""
    package = path.relative_to(ROOT).parent.parts
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = list(package[:len(package) - node.level + 1]) if node.level else []
            if node.module:
                found.add(".".join(base + [node.module]))
            else:
                found.update(".".join(base + [a.name]) for a in node.names)
    return found


def engine_reads(path: pathlib.Path) -> set[str]:
    """Attributes read off an engine: `x.engine.A`, `engine.A`, and `e.A` where e = x.engine or create_engine()."""
    tree = ast.parse(path.read_text())
    names = {"engine"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and _is_engine(node.value, set()):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return {node.attr for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and _is_engine(node.value, names)}


def _is_engine(node, names: set[str]) -> bool:
    if isinstance(node, ast.Attribute):
        return node.attr == "engine"
    if isinstance(node, ast.Name):
        return node.id in names
    if isinstance(node, ast.Call):
        return isinstance(node.func, ast.Name) and node.func.id == "create_engine"
    return False


def test_core_sim_and_workloads_import_no_torch():
    code = ("import sys, pie_lab, pie_lab.core.engine, pie_lab.core.controller, pie_lab.live, "
            "pie_lab.executors.sim, pie_lab.workloads, pie_lab.sim.cost_model, pie_lab.config_io, pie_lab.export; "
            "from pie_lab import create_engine; e = create_engine('opt-13b', 'sim', policy='pie', swap_budget_blocks=8); "
            "e.add_request([5, 6, 7]); e.step(); "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_core_imports_no_executor_model_or_factory():
    for path in (ROOT / "pie_lab" / "core").rglob("*.py"):
        ours = {m for m in imports(path) if m.split(".")[0] in ("pie_lab", "torch")}
        bad = {m for m in ours if not any(m == ok or m.startswith(ok + ".") for ok in CORE_MAY_IMPORT)}
        assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


def test_pie_lab_never_imports_widgets_or_notebooks():
    for path in (ROOT / "pie_lab").rglob("*.py"):
        bad = {m for m in imports(path) if m.split(".")[0] in ("widgets", "notebooks")}
        assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


def test_widgets_use_only_the_public_api():
    for path in (ROOT / "widgets").rglob("*.py"):
        used = {m for m in imports(path) if m.split(".")[0] == "pie_lab"}
        assert used <= PUBLIC, f"{path.relative_to(ROOT)} imports {used - PUBLIC}"
        src = path.read_text()
        assert "._" not in src.replace("self._", "").replace("cls._", "").replace("__", ""), \
            f"{path.relative_to(ROOT)} reaches into a private attribute"
        reads = engine_reads(path)
        assert reads <= ENGINE_PUBLIC, f"{path.relative_to(ROOT)} reaches into the engine: {reads - ENGINE_PUBLIC}"


def test_engine_reach_check_catches_a_private_part(tmp_path):
    bad = tmp_path / "w.py"
    bad.write_text("def f(runner):\n    eng = runner.engine\n    return eng.blocks.host.capacity, runner.engine.executor.name\n")
    assert engine_reads(bad) == {"blocks", "executor"}


def module_graph() -> dict[str, set[str]]:
    """pie_lab module -> the pie_lab modules it imports (top level or inside functions)."""
    paths = {}
    for path in (ROOT / "pie_lab").rglob("*.py"):
        rel = path.relative_to(ROOT).with_suffix("")
        paths[".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)] = path
    graph = {}
    for name, path in paths.items():
        targets = set()
        for m in imports(path):
            while m and m not in paths:          # `from pkg.mod import name`: the module
                m = m.rpartition(".")[0]
            if m and m != name:
                targets.add(m)
        graph[name] = targets
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of `graph` (its modules in order, the first repeated at the end), or None."""
    state: dict[str, int] = {}                   # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node):
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_find_cycle_finds_a_circle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "d": {"a", "c"}}) is None


def test_no_import_circles():
    graph = module_graph()
    assert len(graph) > 50
    assert find_cycle(graph) is None, f"import circle: {' -> '.join(find_cycle(graph))}"


def test_config_sits_below_the_core():
    """The core, the sim and the executors import pie_lab.config: it imports none of them."""
    assert module_graph()["pie_lab.config"] <= {"pie_lab.errors", "pie_lab.policy_traits"}
