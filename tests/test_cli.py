"""The real `vmsift` command: output, JSON documents, exit codes, no tracebacks."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import sample, vmsift

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "examples" / "demo-vm"



def test_inspect_text_and_json():
    out = vmsift("inspect", DEMO / "demo.vmsd")
    assert out.returncode == 0, out.stderr
    assert "VMware snapshot database" in out.stdout and "before upgrade (current)" in out.stdout
    doc = json.loads(vmsift("inspect", "--json", DEMO / "demo.vmsd").stdout)
    assert (doc["schema"], doc["kind"], doc["detected_by"]) == (1, "vmsd", "content")
    assert doc["data"]["current"] == 3 and len(doc["data"]["snapshots"]) == 4


def test_inspect_sample_sparse_json():
    doc = json.loads(vmsift("inspect", "--json", sample("dfvfs_ext2.vmdk")).stdout)
    assert doc["kind"] == "vmdk-sparse"
    assert doc["data"]["descriptor"]["cid"] == "dc80b6c7"


def test_warnings_go_to_stderr():
    out = vmsift("inspect", DEMO / "demo.vmx")
    assert out.returncode == 0
    assert "warning: key 'tools.synctime' is set more than once" in out.stderr
    assert "warning" not in out.stdout


def test_folder_inspect():
    out = vmsift("inspect", "--json", DEMO)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    files = {f["name"]: f for f in doc["files"]}
    assert doc["kind"] == "folder" and set(files) >= {"demo.vmx", "demo.vmsd", "demo.vmdk"}
    assert files["demo.vmx"]["kind"] == "vmx"
    assert files["demo_data.vmdk"]["data"]["create_type"] == "twoGbMaxExtentFlat"


def test_folder_lists_symlinks_without_following(tmp_path):
    (tmp_path / "a.vmsd").write_bytes(b'snapshot.lastUID = "1"\n')
    os.symlink("/etc/passwd", tmp_path / "escape.vmx")
    doc = json.loads(vmsift("inspect", "--json", tmp_path).stdout)
    link = next(f for f in doc["files"] if f["name"] == "escape.vmx")
    assert link["error"]["class"] == "UnsupportedError" and "not followed" in \
        link["error"]["message"]


@pytest.mark.parametrize("make, code, text", [
    (lambda p: p / "missing.vmx", 6, "no such file"),
    (lambda p: (p / "x.bin").write_bytes(b"\x01\x02random") and p / "x.bin", 4,
     "not a file vmsift can decode"),
    (lambda p: (p / "t.vmdk").write_bytes(b"KDMV\x01\0\0\0") and p / "t.vmdk", 3,
     "t.vmdk @ 0x0"),
    (lambda p: (p / "d.vmdk").write_bytes(b"# Disk DescriptorFile\njunk\n") and p / "d.vmdk",
     3, "not a VMDK descriptor"),
])
def test_errors_are_one_line_with_exit_code(tmp_path, make, code, text):
    out = vmsift("inspect", make(tmp_path))
    assert out.returncode == code
    assert out.stderr.startswith("vmsift: error: ") and text in out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_usage_error_exit_code():
    out = vmsift("inspect")
    assert out.returncode == 2 and "Traceback" not in out.stderr


def test_version():
    out = vmsift("--version")
    assert out.returncode == 0 and "vmsift" in out.stdout


def test_sizes_for_people():
    from vmsift.report import human_size, size_field

    assert [human_size(n) for n in (None, 0, 1023, 1024, 1_207_959_552, 1258291200)] == [
        "-", "0 bytes", "1023 bytes", "1 KiB", "1.125 GiB", "1.172 GiB"]
    assert size_field(5) == "5 bytes" and size_field(2 << 30) == "2147483648 (2 GiB)"


@pytest.mark.parametrize("command", [["inspect"], ["ds", "ls"], ["disk", "info"]])
def test_named_pipes_and_character_devices_are_refused_not_read(tmp_path, command):
    fifo = tmp_path / "x.vmdk"
    os.mkfifo(fifo)  # nobody writes: opening it for reading would wait forever
    for path in (fifo, "/dev/zero"):
        out = vmsift(*command, path, timeout=60)
        assert out.returncode == 6, out.stderr
        assert "not a regular file or block device" in out.stderr
        assert ("named pipe" if path == fifo else "character device") in out.stderr


def test_a_command_imports_only_what_it_uses(tmp_path):
    # start-up time: `ds ls` of a folder loads neither the other commands nor any format's
    # binary layouts; `--help` still lists every command (and construct, which the layouts
    # replaced for start-up time, stays out)
    (tmp_path / "a.vmx").write_text('displayName = "a"\n')
    code = ("import sys\nfrom vmsift.cli import main\nmain(sys.argv[1:])\n"
            "print(' '.join(sorted(m for m in sys.modules if m.startswith(('vmsift', "
            "'construct')))))")
    out = subprocess.run([sys.executable, "-c", code, "ds", "ls", str(tmp_path)],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    listed, loaded = out.stdout.splitlines()[0], set(out.stdout.splitlines()[-1].split())
    assert listed == "a.vmx" and "vmsift.cli.ds_cmd" in loaded
    assert not loaded & {"vmsift.cli.disk_cmd", "vmsift.cli.inspect_cmd", "construct",
                         "vmsift.formats.layout", "vmsift.formats.vmdk.sparse",
                         "vmsift.datastore.vmfs"}
    commands = vmsift("--help").stdout.split("Commands:")[1].split()
    assert {"disk", "ds", "inspect"} <= set(commands)
