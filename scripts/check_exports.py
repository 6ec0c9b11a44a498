"""Check every export of the grid (pie_lab/export/grid.py) with the released engines' own parsers and
validators, and refresh the snapshot CI checks exports against (data/export_engines.json).

    PYTHONPATH=$PWD python scripts/check_exports.py              # check, and rewrite the snapshot
    PYTHONPATH=$PWD python scripts/check_exports.py --no-write   # check only

It builds a throwaway venv (default /tmp/exports-venv; never the main Python) on first use that
sees the calling Python's packages (torch, transformers, pydantic, numpy; read, never changed),
whether that Python is a venv, conda or the system's (`--system-site-packages` and a .pth file
naming the caller's site-packages), the released vLLM and SGLang wheels installed with --no-deps, and the
modules their argument code imports (PURE below, pinned; triton and flashinfer are among them
because SGLang's utils and vLLM's FlashInfer backend import them at module level). No CUDA build,
no GPU. Nothing is stubbed; scripts/exports_engine_probe.py (run inside the venv) says what is set.
Takes ~3 min to build (~400 MB of wheels) and ~1 min to check; CI instead checks the snapshot
(tests/test_export.py), so rerun this after changing an export or moving to a new engine release.
"""
from __future__ import annotations

import argparse
import json
import os
import site
import subprocess
import sys
import tempfile
from pathlib import Path

from pie_lab.export.base import ENGINE_VERSIONS
from pie_lab.export.grid import export_grid
from pie_lab.model_spec import spec_from_model

ROOT = Path(__file__).resolve().parents[1]
SNAPSHOT = ROOT / "data" / "export_engines.json"
ENGINES = {"vllm": ENGINE_VERSIONS["vllm"].split()[-1], "sglang": ENGINE_VERSIONS["sglang"].split()[-1]}
PURE = ["aiohappyeyeballs==2.7.1", "aiohttp==3.14.5", "aiosignal==1.4.0", "apache-tvm-ffi==0.1.11",
        "cachetools==8.0.2", "cbor2==6.3.0", "einops==0.8.2", "fastapi==0.136.3", "flashinfer-python==0.7.2.post1",
        "frozenlist==1.8.0", "llguidance==1.7.3", "msgspec==0.23.0", "multidict==7.2.1", "nvidia-ml-py==13.615.71",
        "openai==3.57.0", "openai-harmony==0.0.8", "partial-json-parser==0.2.1.1.post7", "pillow==13.0.0",
        "propcache==0.5.4", "psutil==7.2.2", "pybase64==1.5.1", "starlette==1.10.0", "triton==3.9.0",
        "uvloop==0.23.0", "xgrammar==0.2.8", "yarl==1.25.1"]
# Grid exports changed back to what they were before issue 16: the check must reject each (proof
# that it can fail). (label, grid entry, flag, new value; None drops the flag)
MUST_FAIL = [
    ("vllm --swap-space", "llama-3.1-8b/vllm-swap/chunked=on/block=16/gpu=1500/vllm", "--swap-space", "4"),
    ("vllm block size 8", "opt-13b/recompute/chunked=on/block=16/gpu=1500/vllm", "--block-size", "8"),
    ("vllm Llama without chunked prefill or max_model_len", "llama-3.1-8b/recompute/chunked=off/block=16/gpu=1500/vllm",
     "--max-model-len", None),
    ("sglang page 24, chunk 2048", "opt-13b/recompute/chunked=on/block=24/gpu=1500/sglang",
     "--chunked-prefill-size", "2048"),
    ("sglang hicache ratio 1", "opt-13b/pie/chunked=on/block=16/gpu=1500/sglang", "--hicache-ratio", "1.0"),
]


def with_flag(argv: list[str], flag: str, value: str | None) -> list[str]:
    if flag not in argv:
        return argv + [flag, value]
    i = argv.index(flag)
    return argv[:i] + argv[i + 2:] if value is None else argv[:i + 1] + [value] + argv[i + 2:]


def caller_site_dirs() -> list[str]:
    """Where this Python finds its packages: a venv's own site-packages, conda's or the system's."""
    dirs = list(site.getsitepackages())
    if site.ENABLE_USER_SITE:
        dirs.append(site.getusersitepackages())
    return [d for d in dirs if Path(d).is_dir()]


def make_venv(venv: Path, with_pip: bool = True) -> Path:
    """The venv, and a .pth file in it that adds this Python's site-packages (with their own .pth
    files: editable installs): `--system-site-packages` alone gives a venv made from a venv the
    *base* interpreter's packages, not the calling venv's."""
    py = venv / "bin" / "python"
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", *([] if with_pip else ["--without-pip"]),
                        str(venv)], check=True)
    purelib = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                             capture_output=True, text=True, check=True).stdout.strip()
    pth = Path(purelib) / "pie_lab_caller_site.pth"
    pth.unlink(missing_ok=True)                        # rewritten for whichever Python calls now
    seen = subprocess.run([str(py), "-c", "import os, sys; print('\\n'.join(map(os.path.realpath, sys.path)))"],
                          capture_output=True, text=True, check=True).stdout.split("\n")
    lines = [f"import site; site.addsitedir({d!r})" for d in caller_site_dirs() if os.path.realpath(d) not in seen]
    pth.write_text("".join(line + "\n" for line in lines))
    return py


def build_venv(venv: Path) -> Path:
    py, done = make_venv(venv), venv / "engines-installed"        # an interrupted install is redone
    if not done.exists():
        pip = [str(py), "-m", "pip", "install", "-q", "--no-deps"]
        subprocess.run(pip + [f"vllm=={ENGINES['vllm']}", f"sglang=={ENGINES['sglang']}", *PURE], check=True)
        done.write_text(" ".join(ENGINES.values()) + "\n")
    return py


def entries() -> list[dict]:
    grid = [{"name": name, "target": t.target, "argv": list(t.argv),
             "max_position_embeddings": spec_from_model(rc.model).max_position_embeddings}
            for name, rc, t in export_grid()]
    by_name = {e["name"]: e for e in grid}
    bad = [{**by_name[entry], "name": f"must fail: {label}", "argv": with_flag(by_name[entry]["argv"], flag, value)}
           for label, entry, flag, value in MUST_FAIL]
    return grid + bad


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--venv", type=Path, default=Path("/tmp/exports-venv"))
    ap.add_argument("--no-write", action="store_true", help="check only; leave data/export_engines.json")
    args = ap.parse_args()
    py = build_venv(args.venv)
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "in.json", Path(tmp) / "out.json"
        src.write_text(json.dumps({"entries": entries()}))
        run = subprocess.run([str(py), str(ROOT / "scripts" / "exports_engine_probe.py"), str(src), str(dst)],
                             capture_output=True, text=True)
        if run.returncode:
            print(run.stdout[-3000:], run.stderr[-3000:], sep="\n", file=sys.stderr)
            return run.returncode
        result = json.loads(dst.read_text())
    verdicts = result["verdicts"]
    grid = [v for v in verdicts if not v["name"].startswith("must fail")]
    failed = [v for v in grid if not v["ok"]]
    passed_bad = [v for v in verdicts if v["name"].startswith("must fail") and v["ok"]]
    versions = {k: e["version"] for k, e in result["engines"].items()}
    print(f"engines: {versions}")
    for v in failed:
        print(f"FAIL {v['name']}: {v['problem']}")
    for v in verdicts:
        if v["name"].startswith("must fail"):
            print(f"{'REJECTED' if not v['ok'] else 'NOT REJECTED'} {v['name']}: {v['problem']}")
    print(f"grid: {len(grid) - len(failed)}/{len(grid)} exports pass")
    if not args.no_write and not failed and not passed_bad:
        snapshot = {"refresh": "PYTHONPATH=$PWD python scripts/check_exports.py",
                    "engines": result["engines"],
                    "grid": {"checked": len(grid), "passed": len(grid) - len(failed)},
                    "must_fail": {v["name"][len("must fail: "):]: v["problem"]
                                  for v in verdicts if v["name"].startswith("must fail")}}
        SNAPSHOT.write_text(json.dumps(snapshot, indent=1, sort_keys=True) + "\n")
        print(f"wrote {SNAPSHOT.relative_to(ROOT)}")
    return 1 if failed or passed_bad else 0


if __name__ == "__main__":
    sys.exit(main())
