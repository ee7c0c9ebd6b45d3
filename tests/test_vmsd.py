"""The .vmsd snapshot tree, on a real ESXi file and on the project's demo VM."""

from pathlib import Path

from tests.helpers import sample
from vmsift.formats import vmsd
from vmsift.inspect import inspect_path

DEMO = Path(__file__).resolve().parent.parent / "examples" / "demo-vm"


def test_real_esxi_vmsd():
    raw = sample("xo_esxi_4snap.vmsd").read_bytes()
    db = vmsd.parse(raw)
    assert db.dump() == raw
    assert (db.num_snapshots, db.last_uid, db.current) == (4, 4, 4)
    names = [s.display_name for s in db.snapshots]
    assert names == ["SNAPSHOT POST INSTALL", "SECOND", "third", "from cli"]
    first = db.snapshots[0]
    assert first.create_time == "2022-11-28T15:24:12.664Z"
    assert [s.create_time for s in db.snapshots[1:]] == [None, None, None]
    assert [(s.uid, s.parent) for s in db.snapshots] == [(1, None), (2, 1), (3, 2), (4, 3)]
    assert [s.disks[0].filename for s in db.snapshots] == [
        "test flo_0.vmdk", "test flo_0-000001.vmdk", "test flo_0-000002.vmdk",
        "test flo_0-000003.vmdk"]
    assert {s.disks[0].node for s in db.snapshots} == {"scsi0:0"}
    assert first.filename == "test flo-Snapshot1.vmsn"
    assert [s.uid for s in db.path_to(4)] == [1, 2, 3, 4]
    assert db.warnings == []


def test_demo_tree_with_branch_and_signed_low_time():
    db = vmsd.parse((DEMO / "demo.vmsd").read_bytes())
    assert [(d, s.display_name) for d, s in db.walk()] == [
        (0, "base install"), (1, "patched"), (2, "before upgrade"), (1, "experiment")]
    assert db.current == 3 and [s.uid for s in db.path_to(3)] == [1, 2, 3]
    base = db.by_uid(1)
    # high 414012, low -365210110 (signed) -> (414012 << 32) | 0xEA3B6502 µs = 1778171929908738
    assert base.create_time_us == (414012 << 32) | (-365210110 & 0xFFFFFFFF)
    assert base.create_time == "2026-05-07T16:38:49.908Z"  # checked with date -u -d @1778171929
    assert base.description == "Fresh OS\nall updates"
    assert base.children == [2, 4]
    assert db.to_dict()["mru"] == [3, 4] and db.to_dict()["need_consolidate"] is False


def test_damaged_trees_warn_and_terminate():
    raw = b"""snapshot.numSnapshots = "3"
snapshot0.uid = "1"
snapshot0.parent = "2"
snapshot1.uid = "2"
snapshot1.parent = "1"
snapshot2.uid = "7"
snapshot2.parent = "99"
snapshot.current = "42"
snapshot99999999.uid = "5"
"""
    db = vmsd.parse(raw)
    text = " | ".join(db.warnings)
    assert "parent loop" in text and "missing parent uid 99" in text
    assert "snapshot.current names uid 42" in text and "beyond any real" in text
    assert sorted(s.uid for _, s in db.walk()) == [1, 2, 7]
    assert [s.uid for s in db.path_to(1)] == [2, 1]


def test_inspect_vmsd_report_and_empty_file(tmp_path):
    report = inspect_path(DEMO / "demo.vmsd")
    assert report.kind == "vmsd"
    assert [r[0] for r in report.tables[0].rows] == [
        "base install", "  patched", "    before upgrade (current)", "  experiment"]
    snap = report.data["snapshots"][0]
    assert snap["disks"] == [{"index": 0, "node": "scsi0:0", "filename": "demo.vmdk"}]
    empty = tmp_path / "vm.vmsd"
    empty.write_bytes(b"")
    report = inspect_path(empty)
    assert report.kind == "vmsd" and report.detected_by == "extension"
    assert report.data["snapshots"] == []
