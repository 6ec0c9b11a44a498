"""The architecture's rules: the core imports no torch; widgets use only the public API; pie_lab
never imports widgets or notebooks."""
import ast
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
PUBLIC = {"pie_lab", "pie_lab.live", "pie_lab.sources", "pie_lab.core.trace", "pie_lab.workloads",
          "pie_lab.config_io", "pie_lab.export", "pie_lab.tune", "pie_lab.bench", "pie_lab.sim.hardware"}


def imports(path: pathlib.Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def test_core_sim_and_workloads_import_no_torch():
    code = ("import sys, pie_lab, pie_lab.core.engine, pie_lab.core.controller, pie_lab.live, "
            "pie_lab.executors.sim, pie_lab.workloads, pie_lab.sim.cost_model, pie_lab.config_io, pie_lab.export; "
            "from pie_lab import Engine; e = Engine.create('opt-13b', 'sim', policy='pie', swap_budget_blocks=8); "
            "e.add_request([5, 6, 7]); e.step(); "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


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
