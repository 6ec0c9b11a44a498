"""Every notebook in a real browser: JupyterLab + Playwright + Debian's chromium, no network.

One JupyterLab on a free localhost port over a temporary copy of the notebooks. Notebook 01: run all
cells through `window.jupyterapp`, wait for the widgets and the Vega views, type a new swap budget
into the slider's readout, and check that the engine's budget changed as the dashboard's readout
(and its last-knob-event line) report it; then switch offload to on-demand and back the same way. Notebooks 02-06 run in short mode (SHORT = True injected
after the parameters cell); each must finish with no error output, no "Error loading script" (a
chart that wanted a CDN), no broken widget and no console error. Screenshots of the dashboard,
notebook 02 and the what-if explorer are saved (to docs/ with PIE_LAB_UPDATE_SCREENSHOT=1, else
beside the test's JupyterLab files, so a test run leaves the repository clean).

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
NOTEBOOKS = sorted(p.name for p in (ROOT / "notebooks").glob("0[1-9]_*.ipynb"))
SHORT_PARAMS = {"SHORT": True, "DURATION_S": 30}
# notebook -> (element to screenshot, file name under docs/ when PIE_LAB_UPDATE_SCREENSHOT=1)
SCREENSHOTS = {"02_transparent_swapping.ipynb": (".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell:has(.vega-embed)", "screenshot_02_transparent_swapping.png"),
               "06_what_if.ipynb": (".pie-whatif", "screenshot_whatif.png")}

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


def _inject(path: Path, values: dict) -> None:
    """A cell after the parameters-tagged one overriding its values (papermill's convention)."""
    import nbformat
    nb = nbformat.read(path, as_version=4)
    idx = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    cell = nbformat.v4.new_code_cell("\n".join(f"{k} = {v!r}" for k, v in values.items()),
                                     metadata={"tags": ["injected-parameters"]})
    cell["id"] = "injected-parameters"
    nb.cells.insert(idx + 1, cell)
    nbformat.write(nb, path)


def _prepare_notebooks(dst: Path) -> None:
    dst.mkdir()
    for p in (ROOT / "notebooks").glob("*.ipynb"):
        shutil.copy(p, dst / p.name)
        _inject(dst / p.name, {"DURATION_S": 180} if p.name.startswith("01_") else SHORT_PARAMS)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    _requirements()
    tmp_path = tmp_path_factory.mktemp("lab")
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


@pytest.fixture(scope="module")
def browser(lab):
    from playwright.sync_api import sync_playwright
    with sync_playwright() as pw:
        ctx = pw.chromium.launch_persistent_context(
            str(lab["tmp"] / "chromium-profile"), executable_path=CHROMIUM, headless=True,
            args=["--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--no-first-run", "--disable-dev-shm-usage"],
            viewport={"width": 1600, "height": 1700})
        try:
            yield ctx
        finally:
            ctx.close()


def _open(browser, lab, drive) -> None:
    """A fresh page; `drive(page)` runs; console errors fail the test; the kernel is shut down after."""
    console_errors: list[str] = []
    console_all: list[str] = []
    page = browser.new_page()
    page.on("console", lambda m: (console_all.append(f"{m.type}: {m.text}"),
                                  console_errors.append(m.text) if m.type == "error" else None))
    page.on("pageerror", lambda e: console_errors.append(f"pageerror: {e}"))
    try:
        drive(page)
    except Exception:
        page.screenshot(path=str(lab["tmp"] / "failure.png"), full_page=True)
        print("browser console:\n" + "\n".join(console_all[-80:]))
        print("screenshot of the failure:", lab["tmp"] / "failure.png")
        raise
    finally:
        try:
            page.evaluate("() => window.jupyterapp.shell.currentWidget.sessionContext.shutdown()")
        except Exception:
            pass
        page.close()
    assert not console_errors, "JavaScript errors on the console:\n" + "\n".join(console_errors)


def _shot_path(lab, name: str) -> Path:
    return ROOT / "docs" / name if os.environ.get("PIE_LAB_UPDATE_SCREENSHOT") else lab["tmp"] / name


def test_dashboard_in_jupyterlab(lab, browser):
    _open(browser, lab, lambda page: _drive(page, lab))


ERROR_OUTPUTS = """() => {
  const w = window.jupyterapp.shell.currentWidget;
  const found = [];
  for (const c of w.content.widgets) {
    if (c.model.type !== 'code') continue;
    const outs = c.model.outputs.toJSON();
    for (const o of outs) {
      if (o.output_type === 'error') found.push(o.ename + ': ' + o.evalue);
    }
  }
  return found;
}"""


def _check_clean(page, name: str):
    """No error output, a drawn chart, no chart that wanted the network, no broken widget."""
    assert page.evaluate(ERROR_OUTPUTS) == [], f"{name}: error outputs"
    page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .vega-embed :is(svg, canvas)").first.wait_for(
        state="attached", timeout=60_000)
    time.sleep(3.0)                                   # the other charts finish drawing
    panel = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden)")
    assert "Error loading script" not in panel.inner_text(), f"{name}: a chart tried to load a script from the network"
    assert panel.locator(".jupyter-widgets-error-widget").count() == 0, f"{name}: a widget failed to render"
    return panel


@pytest.mark.parametrize("name", [n for n in NOTEBOOKS if not n.startswith("01_")])
def test_notebook_short_in_jupyterlab(lab, browser, name):
    def drive(page):
        page.goto(f"{lab['url']}/lab/tree/{name}?reset&token={lab['token']}")      # reset: only this notebook
        page.wait_for_function(KERNEL_IDLE, timeout=120_000)
        page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
        page.wait_for_function(ALL_RUN, timeout=300_000, polling=1000)
        panel = _check_clean(page, name)
        if name in SCREENSHOTS:
            selector, file = SCREENSHOTS[name]
            page.evaluate("() => { const s = window.jupyterapp.shell; if (!s.leftCollapsed) s.collapseLeft(); }")
            shot = _shot_path(lab, file)
            target = page.locator(selector).first
            target.evaluate("el => el.scrollIntoView({block: 'start'})")
            time.sleep(1.0)
            (target if selector.startswith(".pie-") else panel).screenshot(path=str(shot))
            assert shot.stat().st_size > 10_000
    _open(browser, lab, drive)


def _drive(page, lab) -> None:
    page.goto(f"{lab['url']}/lab/tree/01_quickstart.ipynb?reset&token={lab['token']}")
    page.wait_for_function(KERNEL_IDLE, timeout=120_000)
    page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")

    slider = page.locator(".widget-slider.pie-swap-budget")
    slider.wait_for(state="attached", timeout=120_000)
    page.locator(".pie-timeline .vega-embed svg, .pie-timeline .vega-embed canvas").first.wait_for(
        state="attached", timeout=60_000)
    page.locator(".pie-latency .vega-embed svg, .pie-latency .vega-embed canvas").first.wait_for(
        state="attached", timeout=60_000)
    page.wait_for_function(ALL_RUN, timeout=180_000)            # widget messages flow while idle
    _check_clean(page, "01_quickstart.ipynb")
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
    for mode in ("on-demand", "eager"):              # the offload toggle reaches the engine too, and back
        page.locator(".pie-offload button", has_text=mode).click()
        page.wait_for_function(f"() => document.querySelector('.pie-budget').innerText"
                               f".includes('offload {mode}')", timeout=30_000)
        page.wait_for_function(f"() => document.querySelector('.pie-last-knob').innerText"
                               f".includes('offload={mode}')", timeout=30_000)
    assert page.locator(".jupyter-widgets-error-widget").count() == 0
    errors_text = page.locator(".pie-errors").inner_text()
    assert "rejected" not in errors_text and "engine error" not in errors_text, errors_text
    page.evaluate("() => { const s = window.jupyterapp.shell; if (!s.leftCollapsed) s.collapseLeft(); }")
    time.sleep(2.0)                                  # a redraw or two with the new budget
    shot = _shot_path(lab, DOCS_SCREENSHOT.name)
    dash = page.locator(".pie-dashboard")
    dash.scroll_into_view_if_needed()
    dash.screenshot(path=str(shot))
    assert shot.stat().st_size > 10_000
