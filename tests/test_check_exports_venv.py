"""scripts/check_exports.py run from a venv: its throwaway venv sees the calling venv's packages
(`--system-site-packages` alone would give it the base interpreter's). The slow parse stays out."""
import os
import subprocess
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def site_packages(env: Path) -> Path:
    return next((env / "lib").glob("python3*/site-packages"))


def test_throwaway_venv_built_from_a_venv_sees_the_callers_packages(tmp_path):
    caller = tmp_path / "caller"
    venv.EnvBuilder(system_site_packages=True, with_pip=False).create(caller)
    (site_packages(caller) / "only_in_caller_venv.py").write_text("WHERE = 'caller'\n")
    throwaway = tmp_path / "exports-venv"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    code = ("import runpy, sys; m = runpy.run_path(sys.argv[1]); "
            "print(m['make_venv'](__import__('pathlib').Path(sys.argv[2]), with_pip=False))")
    out = subprocess.run([str(caller / "bin" / "python"), "-c", code, str(ROOT / "scripts" / "check_exports.py"),
                          str(throwaway)], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    py = out.stdout.strip().splitlines()[-1]
    probe = "import only_in_caller_venv, yaml; print(only_in_caller_venv.WHERE)"
    seen = subprocess.run([py, "-c", probe], capture_output=True, text=True, env={"PATH": os.environ["PATH"]})
    assert seen.returncode == 0 and seen.stdout.strip() == "caller", seen.stderr
    pth = next(site_packages(throwaway).glob("pie_lab_caller_site.pth")).read_text()
    assert str(site_packages(caller)) in pth
    # without the .pth file the throwaway venv has only the base interpreter's packages: the bug
    next(site_packages(throwaway).glob("pie_lab_caller_site.pth")).unlink()
    assert subprocess.run([py, "-c", probe], capture_output=True, env={"PATH": os.environ["PATH"]}).returncode != 0
