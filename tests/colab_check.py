"""`make colab-check`: install the package the way the notebooks do, into a fresh virtualenv that looks like Colab.

1. A fresh virtualenv with Colab's preinstalled stack (`COLAB_STACK`: numpy 2, TensorFlow >= 2.19 with its Keras 3,
   OpenCV, pandas, scikit-image, ... at the versions Colab ships; `tensorflow-cpu` where there is no GPU).
2. The notebooks' install cell, taken out of the notebook file and run verbatim (only the WHEEL form field is set, to
   the wheel given here, as Colab's form would), with `google.colab` present so the cell takes its Colab branch.
3. Checks: numpy, TensorFlow and Keras versions unchanged; `pip check` clean apart from patchify's numpy pin;
   `import cellseg_tf`; `cellseg-tf demo --quick` trains, predicts and scores; the cell given no source stops with
   a message that says what to do. Every notebook's install cell must be the same cell.

Usage: python tests/colab_check.py --wheel dist/cellseg_tf-<v>-py3-none-any.whl [--venv .venv-colab] [--keep]
Exit status 0 when every check passes; prints each step's wall time.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
INSTALL_TITLE = "#@title Install"
# Colab's preinstalled versions (a Python 3.12 runtime, late 2025) of what the package touches.
COLAB_STACK = {
    "numpy": "2.0.2", "TF": "2.19.0", "keras": "3.10.0", "opencv-python": "4.12.0.88",
    "opencv-python-headless": "4.12.0.88", "pandas": "2.2.2", "scikit-image": "0.25.2", "scipy": "1.16.3",
    "matplotlib": "3.10.0", "albumentations": "2.0.8", "tqdm": "4.67.1", "pyyaml": "6.0.3",
}
# What the install cell must leave exactly as it found it.
UNTOUCHED = ("numpy", "tensorflow", "tensorflow-cpu", "keras")
# A fake `google.colab` module: the install cell's "am I on Colab" test sees one, as on Colab.
COLAB_PRELUDE = "import sys, types\nsys.modules.setdefault('google.colab', types.ModuleType('google.colab'))\n"


def install_cell(notebook: Path) -> str:
    """The source of the notebook's install cell (the code cell whose title starts with '#@title Install')."""
    cells = [c for c in json.loads(notebook.read_text())["cells"]
             if c["cell_type"] == "code" and "".join(c["source"]).startswith(INSTALL_TITLE)]
    if len(cells) != 1:
        raise ValueError(f"{notebook}: expected one install cell (title {INSTALL_TITLE!r}), found {len(cells)}")
    return "".join(cells[0]["source"])


def with_form_values(source: str, **values) -> str:
    """`source` with the form fields `NAME = ...  #@param` set to `values` (as Colab's form does); the rest verbatim."""
    out, seen = [], set()
    for line in source.splitlines():
        name = line.split("=")[0].strip()
        if name in values and "#@param" in line:
            line = f"{name} = {values[name]!r}  #@param" + line.split("#@param", 1)[1]
            seen.add(name)
        out.append(line)
    missing = set(values) - seen
    if missing:
        raise ValueError(f"the install cell has no form field(s) {sorted(missing)}")
    return "\n".join(out) + "\n"


def run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    print("$", " ".join(map(str, cmd)), flush=True)
    return subprocess.run([str(c) for c in cmd], text=True, capture_output=True, **kwargs)


def canonical(name: str) -> str:
    """A distribution name as pip compares them (PEP 503): `tensorflow_cpu` -> `tensorflow-cpu`."""
    return re.sub(r"[-_.]+", "-", name).lower()


def versions(python: Path) -> dict[str, str]:
    """{canonical distribution name: version} of everything installed for `python`."""
    code = ("import json, importlib.metadata as m; "
            "print(json.dumps({d.metadata['Name']: d.version for d in m.distributions()}))")
    res = run([python, "-c", code], check=True)
    return {canonical(k): v for k, v in json.loads(res.stdout).items()}


def pip_check(python: Path) -> list[str]:
    """`pip check` problems, one line each (empty when clean)."""
    res = run([python, "-m", "pip", "check"])
    return [] if res.returncode == 0 else [line for line in res.stdout.splitlines() if line.strip()]


class Check:
    def __init__(self):
        self.failures: list[str] = []
        self.times: dict[str, float] = {}

    def step(self, name: str):
        check = self

        class _Timer:
            def __enter__(self):
                print(f"\n== {name}", flush=True)
                self.t0 = time.perf_counter()

            def __exit__(self, *exc):
                check.times[name] = time.perf_counter() - self.t0
                print(f"   ({check.times[name]:.1f} s)", flush=True)

        return _Timer()

    def expect(self, ok: bool, what: str) -> None:
        print(("   ok   " if ok else "   FAIL ") + what, flush=True)
        if not ok:
            self.failures.append(what)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--wheel", required=True, help="the built wheel (make wheel)")
    ap.add_argument("--venv", default=str(ROOT / ".venv-colab"), help="where to build the fresh virtualenv")
    ap.add_argument("--python", default=sys.executable, help="interpreter the virtualenv is made from")
    ap.add_argument("--tf-package", default=None, help="tensorflow | tensorflow-cpu (default: -cpu without a GPU)")
    ap.add_argument("--keep", action="store_true", help="keep the virtualenv afterwards")
    args = ap.parse_args(argv)

    wheel = Path(args.wheel).resolve()
    if not wheel.is_file():
        print(f"{wheel}: no such wheel; run `make wheel` first", file=sys.stderr)
        return 2
    tf_pkg = args.tf_package or ("tensorflow" if shutil.which("nvidia-smi") else "tensorflow-cpu")
    venv = Path(args.venv).resolve()
    py = venv / "bin" / "python"
    check = Check()
    t_start = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="colab-check-"))
    try:
        with check.step("the notebooks' install cells"):
            cells = {nb.name: install_cell(nb) for nb in NOTEBOOKS}
            first = next(iter(cells.values()))
            check.expect(all(src == first for src in cells.values()),
                         f"every notebook has the same install cell ({', '.join(cells)})")
            cell = first

        with check.step(f"fresh Colab-like virtualenv ({tf_pkg} {COLAB_STACK['TF']})"):
            shutil.rmtree(venv, ignore_errors=True)
            run([args.python, "-m", "venv", venv], check=True)
            stack = [f"{tf_pkg if k == 'TF' else k}=={v}" for k, v in COLAB_STACK.items()]
            res = run([py, "-m", "pip", "install", "-q", *stack])
            if res.returncode:
                print(res.stdout[-4000:], res.stderr[-4000:], file=sys.stderr)
                check.expect(False, "the Colab-like stack installs")
                return 1
            before = versions(py)
            base_problems = pip_check(py)
            check.expect(not base_problems, f"the Colab-like stack itself passes pip check {base_problems or ''}")
            for name in ("numpy", tf_pkg, "keras"):
                check.expect(name in before, f"{name} is preinstalled ({before.get(name)})")

        with check.step("install cell with neither a wheel nor a git URL"):
            script = work / "no_source.py"
            script.write_text(COLAB_PRELUDE + with_form_values(cell, WHEEL="", GIT_URL=""))
            res = run([py, script], cwd=work)
            said = res.stdout + res.stderr
            check.expect(res.returncode != 0 and "make wheel" in said and "GIT_URL" in said,
                         "it stops and says what to do (make wheel / WHEEL / GIT_URL)")

        with check.step("install cell, verbatim, with WHEEL = the built wheel"):
            script = work / "install_cell.py"
            script.write_text(COLAB_PRELUDE + with_form_values(cell, WHEEL=str(wheel)))
            res = run([py, script], cwd=work)
            print(res.stdout[-2000:], res.stderr[-4000:])
            check.expect(res.returncode == 0, "the install cell runs (pip installs, then `import cellseg_tf`)")
            check.expect(re.search(r"^cellseg_tf \S+", res.stdout, re.M) is not None, "it prints the version")

        with check.step("after the install"):
            after = versions(py)
            for name in UNTOUCHED:
                if name in before:
                    check.expect(after.get(name) == before[name],
                                 f"{name} unchanged ({before[name]} -> {after.get(name)})")
            changed = {k: (v, after.get(k)) for k, v in before.items() if after.get(k) != v}
            if changed:
                print("   note: other preinstalled packages changed:", changed)
            added = sorted(set(after) - set(before))
            print("   added:", ", ".join(f"{k} {after[k]}" for k in added))
            problems = pip_check(py)
            others = [p for p in problems if "patchify" not in p.lower()]
            check.expect(not others, f"pip check clean apart from patchify's numpy pin {others or ''}")
            res = run([py, "-c", "import cellseg_tf, cellseg_tf.predict.inference; print(cellseg_tf.__version__)"],
                      cwd=work)
            check.expect(res.returncode == 0, f"import cellseg_tf works {res.stderr[-500:] if res.returncode else ''}")

        with check.step("cellseg-tf demo --quick"):
            env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
            res = run([venv / "bin" / "cellseg-tf", "demo", "--quick", "--verbose", "0", "--out", work / "demo"],
                      cwd=work, env=env)
            print(res.stdout[-1500:], res.stderr[-3000:] if res.returncode else "")
            summary = work / "demo" / "summary.json"
            ok = res.returncode == 0 and summary.is_file()
            if ok:
                s = json.loads(summary.read_text())
                ok = s["n_test"] >= 1 and 0.0 <= s["dice"] <= 1.0
            check.expect(ok, "the demo trains, predicts and scores (summary.json)")
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if not args.keep:
            shutil.rmtree(venv, ignore_errors=True)

    total = time.perf_counter() - t_start
    print("\nwall time: " + ", ".join(f"{k}: {v:.0f} s" for k, v in check.times.items()) + f"; total {total:.0f} s")
    if check.failures:
        print(f"colab-check FAILED ({len(check.failures)}): " + "; ".join(check.failures))
        return 1
    print(f"colab-check passed in {total:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
