"""The README's main job, examples/demo.sh, runs to the end and says what it promises."""

from __future__ import annotations

import subprocess

from tests.helpers import ROOT, require_tool


def test_demo_runs(tmp_path):
    for tool in ("qemu-img", "qemu-io"):
        require_tool(tool)
    out = subprocess.run(["bash", str(ROOT / "examples" / "demo.sh"), str(tmp_path / "demo")],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "(chain hint): 1 GiB, read 2 MiB" in out.stdout
    assert "(identity hint): 1 GiB, read 0 bytes" in out.stdout
    assert "disk web.vmdk: 2 MiB changed in 1 range(s)" in out.stdout
    assert "restored VM disk = source (qemu-img compare)" in out.stdout
    assert "no problems found" in out.stdout
