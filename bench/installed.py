"""vmsift as a user has it, for the benchmarks: installed from a tree (not editable) into a
venv of its own, with the `vmsift` command pip writes.

The dev venv's editable install adds an import hook that costs every process of it some
15 ms of site start-up, which no user pays; an installed copy also leaves the checkout free
to change while a long benchmark runs. The venv takes vmsift's dependencies from the venv
running the benchmark (a ``.pth`` file naming its site folders).
"""

from __future__ import annotations

import subprocess
import sys
import sysconfig
from pathlib import Path


def install(tree: Path, venv: Path) -> Path:
    """Install ``tree`` into a new venv at ``venv``; returns its `vmsift` command (its
    interpreter is beside it: ``command.with_name("python")``)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    site = subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    deps = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    Path(site, "deps.pth").write_text("".join(f"{d}\n" for d in sorted(deps)))
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target",
                    site, str(tree)], check=True)
    # pip --target leaves the console script in the site folder, naming this interpreter
    script = Path(site, "bin", "vmsift").read_text().split("\n", 1)[1]
    command = venv / "bin" / "vmsift"
    command.write_text(f"#!{py}\n{script}")
    command.chmod(0o755)
    return command
