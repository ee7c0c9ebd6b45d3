"""Start-up benchmark: small commands against the interpreter itself and debugvmfs.

`vmsift --help` and `vmsift ds ls` of the 100-entry `directory` of the ESXi-made VMFS5 image
of the dissect.vmfs sdist (tests/fixtures/vmfs_images.py), against `python -c pass` (the
floor of any Python command) and `debugvmfs IMG ls /directory`. vmsift runs as a user has
it: installed from the tree (not editable) into a venv of its own that takes its
dependencies from this one (`installed.install`), run by the `vmsift` command pip writes
and by ``python -m vmsift``. Whole processes, with hyperfine when it is on PATH (``-N``, 3
warm-ups, 30 runs, the fastest: this machine is shared), else best of 30.
With ``--baseline DIR`` (a checkout of an older vmsift) its commands are measured in the
same run.
Then ``python -X importtime`` of `ds ls`: the modules that cost the most, cumulative.

    .venv/bin/python bench/bench_startup.py [--cache DIR] [--baseline DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.fixtures import vmfs_images  # noqa: E402

from installed import install  # noqa: E402

RUNS = 30


def seconds(cmd: list[str], env: dict[str, str]) -> float:
    """Fastest wall time of ``cmd`` over `RUNS` runs (by hyperfine when available)."""
    if shutil.which("hyperfine"):
        with tempfile.NamedTemporaryFile(suffix=".json") as out:
            subprocess.run(["hyperfine", "-N", "-w", "3", "-r", str(RUNS), "--export-json",
                            out.name, " ".join(cmd)], check=True, env=env,
                           capture_output=True)
            return json.load(open(out.name))["results"][0]["min"]
    best = float("inf")
    for _ in range(RUNS):
        start = time.perf_counter()
        subprocess.run(cmd, check=True, env=env, capture_output=True)
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "vmsift-tests")
    ap.add_argument("--baseline", type=Path)
    args = ap.parse_args()
    image = str(vmfs_images.image("vmfs/vmfs5", args.cache))
    trees = {"vmsift": ROOT, **({"baseline": args.baseline} if args.baseline else {})}
    env = dict(os.environ)
    work = Path(tempfile.mkdtemp(prefix="vmsift-startup-"))
    os.chdir(work)  # `python -m` looks in the working directory first: not in a checkout
    try:
        commands = {name: install(tree, work / name) for name, tree in trees.items()}
        py = [str(commands["vmsift"].with_name("python"))]
        listed = subprocess.run([*py, "-m", "vmsift", "ds", "ls", image, "directory"],
                                check=True, capture_output=True, text=True,
                                cwd=work).stdout.splitlines()
        assert len(listed) == 100, len(listed)
        rows = [("python -c pass (the dev venv: editable install)",
                 seconds([sys.executable, "-c", "pass"], env)),
                ("python -c pass (installed)", seconds([*py, "-c", "pass"], env)),
                ("debugvmfs ls /directory", seconds(["debugvmfs", image, "ls", "/directory"],
                                                    env))]
        for name, command in commands.items():
            python = str(command.with_name("python"))
            rows.append((f"{name} --help", seconds([str(command), "--help"], env)))
            rows.append((f"{name} ds ls (100 names)",
                         seconds([str(command), "ds", "ls", image, "directory"], env)))
            rows.append((f"python -m {name} ds ls (100 names)",
                         seconds([python, "-m", "vmsift", "ds", "ls", image, "directory"],
                                 env)))
        trace = subprocess.run([*py, "-X", "importtime", str(commands["vmsift"]), "ds", "ls",
                                image, "directory"], check=True, capture_output=True,
                               text=True, cwd=work).stderr
    finally:
        os.chdir(ROOT)
        shutil.rmtree(work)
    print("| command | ms |")
    print("|---|---:|")
    for name, s in rows:
        print(f"| {name} | {s * 1000:.1f} |")
    top = []
    for line in trace.splitlines():
        if line.startswith("import time:") and "|" in line:
            _, cumulative, name = line.split("|")
            if not name.startswith("   ") and cumulative.strip().isdigit():  # top level
                top.append((int(cumulative), name.strip()))
    print("\n| `ds ls` import (top level, cumulative) | ms |")
    print("|---|---:|")
    for us, name in sorted(top, reverse=True)[:10]:
        print(f"| {name} | {us / 1000:.1f} |")


if __name__ == "__main__":
    main()
