"""Drive notebook 01 in a real browser: JupyterLab + Playwright + Debian's chromium.

Starts JupyterLab on a free localhost port over a temporary copy of the notebooks, runs all cells
through `window.jupyterapp`, waits for the widgets and the Vega views, types a new swap budget into
the slider's readout, and checks that the engine's budget changed as the dashboard's readout (and
its last-knob-event line) report it. No JavaScript errors are allowed on the console. A screenshot
of the dashboard is saved (to docs/screenshot_dashboard.png with PIE_LAB_UPDATE_SCREENSHOT=1,
else beside the test's JupyterLab files, so a test run leaves the repository clean).

Needs `pip install playwright` (never `playwright install`: it downloads browsers) and
`apt-get install chromium`; skipped with a message otherwise.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("PIE_LAB_CHROMIUM", "/usr/bin/chromium")
DOCS_SCREENSHOT = ROOT / "docs" / "screenshot_dashboard.png"
NEW_BUDGET = 40

pytestmark = pytest.mark.browser


def _requirements():
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no chromium at {CHROMIUM}: apt-get install chromium (or set PIE_LAB_CHROMIUM)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.skip("the playwright package is missing: pip install playwright (do not run `playwright install`)")
    try:
        import jupyterlab  # noqa: F401
    except ImportError:
        pytest.skip("jupyterlab is not installed")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _prepare_notebooks(dst: Path) -> None:
    import nbformat
    dst.mkdir()
    for p in (ROOT / "notebooks").glob("*.ipynb"):
        shutil.copy(p, dst / p.name)
    nb_path = dst / "01_quickstart.ipynb"
    nb = nbformat.read(nb_path, as_version=4)
    idx = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    cell = nbformat.v4.new_code_cell("DURATION_S = 180", metadata={"tags": ["injected-parameters"]})
    cell["id"] = "injected-parameters"
    nb.cells.insert(idx + 1, cell)
    nbformat.write(nb, nb_path)


@pytest.fixture
def lab(tmp_path):
    _requirements()
    root = tmp_path / "notebooks"
    _prepare_notebooks(root)
    port, token = _free_port(), secrets.token_hex(16)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    env["JUPYTER_CONFIG_DIR"] = str(tmp_path / "jupyter_config")      # no user settings, no news prompt
    env["JUPYTERLAB_WORKSPACES_DIR"] = str(tmp_path / "workspaces")
    settings = tmp_path / "lab_settings"
    env["JUPYTERLAB_SETTINGS_DIR"] = str(settings)
    for plugin, values in {"@jupyterlab/apputils-extension/notification": {"fetchNews": "false"},
                           # keep every cell in the DOM (JupyterLab 4 virtualizes off-screen cells)
                           "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"}}.items():
        f = settings / f"{plugin}.jupyterlab-settings"
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(json.dumps(values))
    (tmp_path / "jupyter_config").mkdir()
    (tmp_path / "jupyter_config" / "jupyter_server_config.json").write_text(json.dumps(
        {"LabApp": {"news_url": None, "check_for_updates_class": "jupyterlab.NeverCheckForUpdate"}}))
    cmd = [sys.executable, "-m", "jupyter", "lab", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
           f"--ServerApp.root_dir={root}", f"--IdentityProvider.token={token}", "--allow-root",
           "--LabApp.expose_app_in_browser=True", "--ServerApp.port_retries=0"]
    log = open(tmp_path / "lab.log", "w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=str(root))
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2).read()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    log.flush()
                    pytest.fail("jupyter lab did not start:\n" + (tmp_path / "lab.log").read_text()[-3000:])
                time.sleep(0.3)
        yield dict(url=url, token=token, tmp=tmp_path)
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


KERNEL_IDLE = """() => {
  const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
  const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
  return !!k && k.status === 'idle' && w.content && w.content.widgets && w.content.widgets.length > 0;
}"""

ALL_RUN = """() => {
  const w = window.jupyterapp.shell.currentWidget;
  const cells = w.content.widgets.filter(c => c.model.type === 'code');
  const k = w.sessionContext.session.kernel;
  return k.status === 'idle' && cells.every(c => c.model.executionCount !== null);
}"""


def test_dashboard_in_jupyterlab(lab):
    from playwright.sync_api import sync_playwright

    console_errors: list[str] = []
    console_all: list[str] = []
    with sync_playwright() as pw:
        ctx = pw.chromium.launch_persistent_context(
            str(lab["tmp"] / "chromium-profile"), executable_path=CHROMIUM, headless=True,
            args=["--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--no-first-run", "--disable-dev-shm-usage"],
            viewport={"width": 1600, "height": 1700})
        try:
            page = ctx.pages[0] if ctx.pages else ctx.new_page()
            page.on("console", lambda m: (console_all.append(f"{m.type}: {m.text}"),
                                          console_errors.append(m.text) if m.type == "error" else None))
            page.on("pageerror", lambda e: console_errors.append(f"pageerror: {e}"))
            try:
                _drive(page, lab)
            except Exception:
                page.screenshot(path=str(lab["tmp"] / "failure.png"), full_page=True)
                print("browser console:\n" + "\n".join(console_all[-80:]))
                print("screenshot of the failure:", lab["tmp"] / "failure.png")
                raise
        finally:
            ctx.close()
    assert not console_errors, "JavaScript errors on the console:\n" + "\n".join(console_errors)


def _drive(page, lab) -> None:
    page.goto(f"{lab['url']}/lab/tree/01_quickstart.ipynb?token={lab['token']}")
    page.wait_for_function(KERNEL_IDLE, timeout=120_000)
    page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")

    slider = page.locator(".widget-slider.pie-swap-budget")
    slider.wait_for(state="attached", timeout=120_000)
    page.locator(".pie-timeline .vega-embed svg, .pie-timeline .vega-embed canvas").first.wait_for(
        state="attached", timeout=60_000)
    page.locator(".pie-latency .vega-embed svg, .pie-latency .vega-embed canvas").first.wait_for(
        state="attached", timeout=60_000)
    page.wait_for_function(ALL_RUN, timeout=120_000)            # widget messages flow while idle
    budget = page.locator(".pie-budget")
    page.wait_for_function("() => (document.querySelector('.pie-budget') || {}).innerText"
                           "?.includes('32 blocks')", timeout=30_000)   # set by a code cell

    page.locator(".pie-dashboard").scroll_into_view_if_needed()
    readout = slider.locator(".widget-readout")
    readout.click()
    page.keyboard.press("Control+A")
    page.keyboard.type(str(NEW_BUDGET))
    page.keyboard.press("Enter")

    page.wait_for_function(f"() => document.querySelector('.pie-budget').innerText"
                           f".includes('{NEW_BUDGET} blocks')", timeout=30_000)
    page.wait_for_function(f"() => document.querySelector('.pie-last-knob').innerText"
                           f".includes('swap_budget_blocks={NEW_BUDGET}')", timeout=30_000)
    assert f"{NEW_BUDGET} blocks" in budget.inner_text()
    assert page.locator(".jupyter-widgets-error-widget").count() == 0
    errors_text = page.locator(".pie-errors").inner_text()
    assert "rejected" not in errors_text and "engine error" not in errors_text, errors_text
    page.evaluate("() => { const s = window.jupyterapp.shell; if (!s.leftCollapsed) s.collapseLeft(); }")
    time.sleep(2.0)                                  # a redraw or two with the new budget
    shot = DOCS_SCREENSHOT if os.environ.get("PIE_LAB_UPDATE_SCREENSHOT") else lab["tmp"] / "dashboard.png"
    dash = page.locator(".pie-dashboard")
    dash.scroll_into_view_if_needed()
    dash.screenshot(path=str(shot))
    assert shot.stat().st_size > 10_000
