"""`pie-lab lab`: JupyterLab (or Voila) on the workbench notebook."""
from __future__ import annotations

import importlib.util
import os
import shlex
import subprocess
import sys
from pathlib import Path

from .errors import ConfigError

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "01_quickstart.ipynb"
# a labconfig/page_config.json that turns off JupyterLab's news prompt, for this server only
LAB_CONFIG_PATH = Path(__file__).resolve().parent / "lab_settings"


def cmd_lab(args) -> int:
    nb = Path(args.notebook)
    app = "voila" if args.voila else "jupyterlab"
    if importlib.util.find_spec(app) is None and not args.dry_run:
        raise ConfigError("--voila needs voila: pip install voila (or drop --voila for JupyterLab)" if args.voila
                          else "the lab needs JupyterLab: pip install 'pie_lab[lab]'")
    cmd = [sys.executable, "-m", "voila", str(nb)] if args.voila else [sys.executable, "-m", "jupyter", "lab", str(nb)]
    if args.port:
        cmd.append(f"--port={args.port}")
    if args.no_browser:
        cmd.append("--no-browser")
    if os.name == "posix" and os.geteuid() == 0:
        print("pie-lab: running as root, so the server gets --allow-root", file=sys.stderr)
        cmd.append("--allow-root")
    cmd += args.server_args
    if args.dry_run:
        if not nb.is_file():
            print(f"pie-lab: warning: notebook {nb} does not exist", file=sys.stderr)
        print(shlex.join(cmd))
        return 0
    if not nb.is_file():
        raise ConfigError(f"--notebook {nb} does not exist")
    return 0 if subprocess.call(cmd, env=lab_env()) == 0 else 1


def lab_env() -> dict:
    """This process's environment plus pie_lab's labconfig (no news prompt) ahead of the user's config path."""
    env = dict(os.environ)
    env["JUPYTER_CONFIG_PATH"] = os.pathsep.join(filter(None, [str(LAB_CONFIG_PATH), env.get("JUPYTER_CONFIG_PATH")]))
    return env
