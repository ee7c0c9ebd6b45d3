"""The README's main job, examples/demo.sh, runs to the end and says what it promises."""

from __future__ import annotations

import subprocess

from tests.helpers import ROOT, require_tool


def test_demo_runs(tmp_path):
    for tool in ("qemu-img", "qemu-io", "fusermount3"):  # the demo mounts where FUSE works
        require_tool(tool)
    out = subprocess.run(["bash", str(ROOT / "examples" / "demo.sh"), str(tmp_path / "demo")],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    said = out.stdout
    for line in [
        "installed            1    -",                      # inspect: the .vmsd tree
        "vmware  web   web/web.vmx  2      2",               # ds vms: two disks, two snapshots
        "high      VMX-VNC-NOPASS     web",                   # audit
        "snapshot_done     ds/web/vmware.log         line 6: installed",  # timeline
        "snapshot tree of 3 file(s), 81 MiB read for the files below the current one",
        "web: disk web.vmdk (chain hint): 1 GiB, read 2 MiB",  # backup 2: only the new delta
        "snapshot tree of 4 file(s), 0 bytes read for the files below the current one",
        "web: disk web_1.vmdk (chain hint): 256 MiB, read 0 bytes",
        "disk web.vmdk: 2 MiB changed in 1 range(s)",
        "restored disk = source at backup 1 (sha256)",
        "      snapshot 3: before upgrade (current)",         # the restored tree, listed
        "restored top delta = source (qemu-img compare)",
        "mounted disk of backup 1 = restored disk (cmp)",
        "no problems found",
    ]:
        assert line in said, line
    assert out.stderr == "", out.stderr  # nothing went wrong on the way
