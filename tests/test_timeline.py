"""`vmsift timeline`: file times (host folders, VMFS and OCFS2 inodes) against independent
readers (os.stat, dissect.vmfs, debugfs.ocfs2), snapshot times of a real ESXi .vmsd,
vmware.log events, checkpoint files, heartbeats (debugfs.ocfs2 `hb`) and locks; the bodyfile
read by the real `mactime` of The Sleuth Kit; damaged input gives warnings and the rest."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import stat
import subprocess
import time
from datetime import datetime, timezone

import pytest

from tests.fixtures import vmsn_writer
from tests.helpers import (FIXTURES, dissect_vmfs, missing, require_tool, sample,
                           truncated_copy, vmsift)

T0 = 1_600_000_000  # 2020-09-13T12:26:40Z: the mtimes set
ATIME = int(time.time()) + 3600  # the atimes set: later than any read (relatime keeps them)


def iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def timeline(*args) -> dict:
    out = vmsift("timeline", "--json", *args)
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr
    return json.loads(out.stdout)


@pytest.fixture()
def vm_folder(tmp_path):
    """A VM folder as an examiner copies it: vmx, the ESXi .vmsd sample, a vmware.log, a
    .vmsn, each with known times."""
    vm = tmp_path / "db01"
    vm.mkdir()
    (vm / "db01.vmx").write_text('.encoding = "UTF-8"\nconfig.version = "8"\n'
                                 'virtualHW.version = "14"\ndisplayName = "db01"\n')
    shutil.copy(sample("xo_esxi_4snap.vmsd"), vm / "db01.vmsd")
    shutil.copy(FIXTURES / "logs" / "esxi67_pipe_utc.log", vm / "vmware.log")
    vmsn_writer.write_vmsn(vm / "db01-Snapshot1.vmsn")
    for i, name in enumerate(sorted(os.listdir(vm))):
        os.utime(vm / name, (ATIME + i, T0 + i))
    return vm


def test_a_vm_folder(vm_folder):
    doc = timeline(vm_folder)
    events = doc["events"]
    times = [e["time"] for e in events if e["time"] is not None]
    assert times == sorted(times)
    seen = {(e["what"], os.path.basename(e["source"]), e["time_iso"]) for e in events}
    for i, name in enumerate(sorted(os.listdir(vm_folder))):
        st = os.stat(vm_folder / name)  # the host's own answer
        assert ("m...", name, iso(st.st_mtime)) in seen and st.st_mtime == T0 + i
        # the atime as set (as it was before vmsift read the file: a strictatime mount
        # would move the host's atime on that read)
        assert (".a..", name, iso(ATIME + i)) in seen
    # the snapshot time xen-orchestra's test decodes from this ESXi .vmsd
    snap = next(e for e in events if e["what"] == "snapshot created" and e["time"])
    assert snap["time_iso"].startswith("2022-11-28T15:24:12.664")
    assert "SNAPSHOT POST INSTALL" in snap["detail"]
    # three later snapshots of that file carry no time: listed untimed, at the end
    untimed = [e for e in events if e["time"] is None]
    assert [e["what"] for e in untimed] == ["snapshot created"] * 3 and events[-3:] == untimed
    log = {e["what"]: e for e in events if e["source"].endswith("vmware.log")
           and not re.fullmatch(r"[mac.b]{4}", e["what"])}
    assert log["log_start"]["time_iso"] == "2019-03-10T22:15:01.101000Z"
    assert log["snapshot_start"]["time_iso"] == "2019-03-10T23:00:00Z"
    assert "nightly" in log["snapshot_done"]["detail"]
    assert "scsi0:0" in log["disk_open"]["detail"]
    state = next(e for e in events if e["what"] == "snapshot state written")
    assert state["source"].endswith("db01-Snapshot1.vmsn")
    assert state["time"] == os.stat(vm_folder / "db01-Snapshot1.vmsn").st_mtime
    assert doc["warnings"] == []


def test_a_vmx_means_its_folder_and_the_outputs_agree(vm_folder):
    doc = timeline(vm_folder / "db01.vmx")
    assert {os.path.basename(e["source"]) for e in doc["events"]} >= {
        "db01.vmx", "db01.vmsd", "vmware.log", "db01-Snapshot1.vmsn"}
    out = vmsift("timeline", "--csv", vm_folder / "db01.vmx")
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    assert [(r["time"] or None, r["what"], r["source"]) for r in rows] == [
        (e["time_iso"], e["what"], e["source"]) for e in doc["events"]]
    table = vmsift("timeline", vm_folder).stdout
    assert "2022-11-28T15:24:12.664" in table and "(no time)" in table


def mactime(body: str, tmp_path) -> list[dict]:
    """The Sleuth Kit's own reading of a bodyfile: comma-delimited, ISO dates, UTC."""
    exe = require_tool("mactime")
    path = tmp_path / "body.txt"
    path.write_text(body)
    out = subprocess.run([exe, "-b", str(path), "-d", "-y", "-z", "UTC"], capture_output=True,
                         text=True, check=True, env={**os.environ, "TZ": "UTC"})
    return list(csv.DictReader(io.StringIO(out.stdout)))


def test_the_bodyfile_loads_in_mactime(vm_folder, tmp_path):
    out = vmsift("timeline", "--bodyfile", vm_folder)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert all(len(line.split("|")) == 11 for line in lines)
    rows = mactime(out.stdout, tmp_path)
    dated = [r for r in rows if not r["Date"].startswith("0000")]
    # each file's mtime as mactime reads it, with the file's size, mode and inode
    for name in os.listdir(vm_folder):
        st = os.stat(vm_folder / name)
        row = next(r for r in dated if r["File Name"] == str(vm_folder / name)
                   and r["Type"][0] == "m")
        assert (row["Date"], int(row["Size"]), int(row["Meta"])) == (
            iso(st.st_mtime), st.st_size, st.st_ino)
        assert row["Mode"] == "r/r" + stat.filemode(st.st_mode)[1:]
    # every timed event is one mactime row at its second; untimed facts have no row
    doc = timeline(vm_folder)
    events = [e for e in doc["events"] if e["time"] and not re.fullmatch(r"[mac.b]{4}",
                                                                         e["what"])]
    event_rows = [r for r in dated if r["Type"] == "macb" and r["Meta"] == "0"]
    assert sorted((r["Date"], r["File Name"]) for r in event_rows) == sorted(
        (iso(e["time"]), f"{e['source']}: {e['what']} {e['detail']}") for e in events)
    assert not any("no time" in r["File Name"] for r in rows)


def test_a_vmfs_image(cache_dir, tmp_path):
    """The VMFS writer's image: inode times as dissect.vmfs reads them, the deleted entry,
    the snapshot of vm1.vmsd, heartbeats and lock holders."""
    from tests.fixtures import vmfs_writer as W

    image = W.build_image(cache_dir, "vm")
    doc = timeline(image)
    events = doc["events"]
    by_source = {}
    for e in events:
        by_source.setdefault(e["source"].split(":", 1)[1] if ":" in e["source"] else "",
                             []).append(e)
    with dissect_vmfs(image) as fs:
        for path in ("vm1/vm1.vmx", "vm1/vm1.vmsd", "data/resident.txt", ".fdc.sf"):
            fd = fs.get("/" + path)
            times = {(e["what"], e["time"]) for e in by_source[path]}
            assert ("mac.", fd.mtime.timestamp()) in times
            assert fd.mtime.timestamp() == fd.ctime.timestamp() == fd.atime.timestamp()
    assert [(e["what"], e["time"]) for e in by_source["vm1/vm1.vmx"]] == [
        ("mac.", W.MTIME), ("lock", None)]
    # the .vmsd's createTimeHigh/Low, joined as VMware writes them (low half signed)
    created = ((406000 << 32) | (-1234567 & 0xFFFFFFFF)) / 1e6
    (snap,) = [e for e in by_source["vm1/vm1.vmsd"] if e["what"] == "snapshot created"]
    assert snap["time"] == pytest.approx(created) and "before update" in snap["detail"]
    assert [e["what"] for e in by_source["data/was-deleted.txt"]] == ["deleted entry"]
    hosts = {e["detail"].split("host ")[1].split()[0] for e in events if e["what"] == "heartbeat"}
    assert {W.HOST_A.uuid_str, W.HOST_B.uuid_str, W.HOST_C.uuid_str} <= hosts
    (lock,) = by_source["locked-multi.vmdk"][-1:]
    assert lock["what"] == "lock" and W.HOST_C.uuid_str in lock["detail"]
    assert "stale" in by_source["locked-stale.vmdk"][-1]["detail"]
    assert all(e["time"] is None for e in events if e["what"] in ("lock", "heartbeat"))
    rows = mactime(vmsift("timeline", "--bodyfile", image).stdout, tmp_path)
    assert any(r["File Name"].endswith(":vm1/vm1.vmx") and r["Date"] == iso(W.MTIME)
               and r["Type"] == "mac." for r in rows)


def debugfs_times(image, path: str) -> dict[str, float]:
    """mtime / ctime / atime of ``path`` as debugfs.ocfs2 prints them (hex seconds, ns)."""
    where = path if path.startswith("<") else "/" + path
    text = subprocess.run([require_tool("debugfs.ocfs2"), "-R", f"stat {where}", str(image)],
                          capture_output=True, text=True, check=True).stdout
    out = {}
    for m in re.finditer(r"(\w)time: 0x([0-9a-f]+) 0x([0-9a-f]+)", text):
        out[m[1] + "time"] = int(m[2], 16) + int(m[3], 16) / 1e9
    return out


def file_times(events: list[dict], source: str) -> dict[str, float]:
    """mtime / atime / ctime of one file from its MACB events."""
    got = {}
    for e in events:
        if e["source"] == source and re.fullmatch(r"[mac.b]{4}", e["what"]):
            for letter, name in zip("mac", ("mtime", "atime", "ctime")):
                if letter in e["what"]:
                    got[name] = e["time"]
    return got


def test_a_kernel_written_ocfs2_image(kernel_images):
    image = kernel_images["max4k"]
    doc = timeline(image.path)
    events = doc["events"]
    for path in ("small.txt", "vmware/testvm/testvm.vmx", "vmware/testvm/testvm.vmsd"):
        want = debugfs_times(image.path, path)
        got = file_times(events, f"{image.path}:{path}")
        assert got == pytest.approx({k: want[k] for k in ("mtime", "atime", "ctime")},
                                    abs=1e-6)
    gone = {e["source"].split(":", 1)[1] for e in events if e["what"] == "deleted entry"}
    assert {d["path"] for d in image.deleted if "/" not in d["path"][len("deltest/"):]} <= gone
    snaps = [e for e in events if e["what"] == "snapshot created"]
    assert [s["detail"].split("'")[1] for s in snaps] == ["first", "second"]


def test_an_ocfs2_orphan_with_its_inode_times(cache_dir):
    """A file unlinked while open, then a power-off (the kernel-made orphan4k image): listed
    as an orphan, and its inode's times as debugfs.ocfs2 reads them."""
    from tests.fixtures import ocfs2_kernel

    if gone := ocfs2_kernel.missing_tools():
        missing(f"tools for the OCFS2 kernel images: {', '.join(gone)}")
    image = ocfs2_kernel.build_special_images(cache_dir)["orphan4k"]
    (orphan,) = image.orphans
    doc = timeline(image.path)
    (event,) = [e for e in doc["events"] if e["what"] == "orphan"]
    assert f"inode {orphan['inode']} " in event["detail"]
    assert f"{orphan['size']} bytes" in event["detail"]
    name = f"{image.path}://orphan_dir:0000/{orphan['inode']:016x} (deleted)"
    want = debugfs_times(image.path, f"<{orphan['inode']}>")
    assert file_times(doc["events"], name) == pytest.approx(
        {k: want[k] for k in ("mtime", "atime", "ctime")}, abs=1e-6)
    assert any("journal of slot 0 is dirty" in w for w in doc["warnings"])


def test_ocfs2_heartbeats_are_the_nodes_clocks(cache_dir):
    """o2hb writes the node's wall clock (seconds) as the heartbeat sequence: the test image
    holds small numbers, which debugfs.ocfs2 `hb` prints the same."""
    from tests.fixtures import ocfs2_mkfs

    image = ocfs2_mkfs.build_images(cache_dir)["cluster-membership"].path
    hb = subprocess.run([require_tool("debugfs.ocfs2"), "-R", "hb", str(image)],
                        capture_output=True, text=True, check=True).stdout
    want = {int(m[1]): int(m[2], 16) for m in re.finditer(r"^\s+(\d+):\s+\d+ ([0-9a-f]{16})",
                                                           hb, re.M)}
    doc = timeline(image)
    got = {int(e["detail"].split()[1]): e["time"] for e in doc["events"]
           if e["what"] == "heartbeat"}
    assert got == want and len(want) == 3
    slots = sorted(e["detail"] for e in doc["events"] if e["what"] == "slot")
    assert slots == ["slot 0 held by node 1", "slot 2 held by node 5"]
    assert any("bad checksum" in w for w in doc["warnings"])


# --- damaged input --------------------------------------------------------------------------

def test_a_damaged_log_line_and_garbage_vmsd_times(tmp_path):
    vm = tmp_path / "vm"
    vm.mkdir()
    log = (FIXTURES / "logs" / "esxi67_pipe_utc.log").read_bytes().split(b"\n")
    log[15] = b"\x00\x17\xff\xfe 2019-03-10T23:00:00.000Z garbage" + bytes(40)  # a bad line
    (vm / "vmware.log").write_bytes(b"\n".join(log))
    (vm / "vm.vmsd").write_text(
        'snapshot.lastUID = "2"\nsnapshot.numSnapshots = "2"\n'
        'snapshot0.uid = "1"\nsnapshot0.displayName = "good"\n'
        'snapshot0.createTimeHigh = "406000"\nsnapshot0.createTimeLow = "-1234567"\n'
        'snapshot1.uid = "2"\nsnapshot1.parent = "1"\nsnapshot1.displayName = "bad"\n'
        'snapshot1.createTimeHigh = "zz"\nsnapshot1.createTimeLow = "-1"\n')
    doc = timeline(vm)
    whats = {e["what"] for e in doc["events"] if e["source"].endswith("vmware.log")}
    assert {"log_start", "disk_open", "snapshot_done", "consolidate_done"} <= whats
    assert "snapshot_start" not in whats  # that line was the damaged one
    assert any("no recognised header" in w for w in doc["warnings"])
    snaps = {e["detail"].split("'")[1]: e["time"] for e in doc["events"]
             if e["what"] == "snapshot created"}
    assert snaps["bad"] is None and snaps["good"] == pytest.approx(
        ((406000 << 32) | (-1234567 & 0xFFFFFFFF)) / 1e6)
    assert any("'bad' has an invalid creation time" in w for w in doc["warnings"])


def test_a_checkpoint_file_that_does_not_decode(vm_folder):
    good = (vm_folder / "db01-Snapshot1.vmsn").read_bytes()
    (vm_folder / "db01.vmss").write_bytes(good[:12] + b"\xff" * 100)  # the group table cut
    doc = timeline(vm_folder)
    assert any("db01.vmss" in w for w in doc["warnings"])
    states = {os.path.basename(e["source"]) for e in doc["events"]
              if e["what"].endswith("state written")}
    assert "db01-Snapshot1.vmsn" in states
    assert any(e["what"].startswith("m") for e in doc["events"]  # its file times are kept
               if e["source"].endswith("db01.vmss"))


def test_a_truncated_image_gives_warnings_and_what_was_read(kernel_images, tmp_path):
    cut = truncated_copy(kernel_images["max4k"].path, tmp_path / "cut.img", 40 << 20)
    out = vmsift("timeline", "--json", cut)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["warnings"] and doc["events"]
    assert "Traceback" not in out.stderr and "warning:" in out.stderr
    with open(cut, "rb") as f:  # never written
        assert f.read() == open(kernel_images["max4k"].path, "rb").read(40 << 20)
