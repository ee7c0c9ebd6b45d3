"""vmware.log: the three header styles (+ the oldest one), summary, CRLF, accounting, limits.

Samples in tests/fixtures/logs/ were written for this project after the shapes of public
excerpts (see docs/formats/vmlog.md); no tool exists to act as an oracle.
"""

from __future__ import annotations

import json
import tracemalloc
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import FIXTURES
from vmsift.errors import VmsiftError
from vmsift.formats import vmlog
from vmsift.formats.vmlog import Level, Style
from vmsift.source import BytesSource, FileSource

LOGS = FIXTURES / "logs"
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
UTC = timezone.utc


def load(name: str) -> bytes:
    return (LOGS / name).read_bytes()


def summary(data: bytes, name: str = "vmware.log") -> vmlog.LogSummary:
    return vmlog.summarize(BytesSource(data, name))


def events(data: bytes) -> list[vmlog.Event]:
    return list(vmlog.parse_lines(BytesSource(data)))


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


# --- line styles ----------------------------------------------------------------------------

def test_pipe_style_with_offset_converts_to_utc():
    ev = events(load("ws12_pipe_offset.log"))
    first = ev[0]
    assert (first.parsed, first.style, first.thread, first.level, first.level_code) == \
        (True, Style.PIPE, "vmx", Level.INFO, "I125")
    assert first.time_text == "2016-08-02T09:27:30.822-05:00"
    assert first.timestamp == utc(2016, 8, 2, 14, 27, 30, 822000)
    assert first.timestamp.utcoffset() == timedelta(hours=-5)   # kept as written
    assert first.to_dict()["timestamp"] == "2016-08-02T14:27:30.822Z"
    assert first.message.startswith("Log for VMware Workstation pid=9884")
    warn = ev[7]
    assert (warn.level, warn.level_code) == (Level.WARNING, "W115")
    assert warn.message.startswith('DictionaryLoad: Cannot open file "C:\\Users')
    panic = ev[29]
    assert (panic.thread, panic.level, panic.level_code) == ("vcpu-0", Level.ERROR, "E105")
    assert panic.offset == sum(len(l) + 1 for l in load("ws12_pipe_offset.log").split(b"\n")[:29])


def test_pipe_style_utc_and_empty_message():
    ev = events(load("esxi67_pipe_utc.log"))
    assert ev[0].timestamp == utc(2019, 3, 10, 22, 15, 1, 101000)
    assert [e.thread for e in ev[10:15]] == ["vcpu-0"] * 4 + ["vcpu-1"]
    assert ev[14].level is Level.WARNING
    # a message VMware split over two lines keeps one event per line, each with the prefix
    assert [e.message for e in ev[18:20]] == ["Guest: a message",
                                              "Guest: that VMware wrote on two lines"]
    assert ev[20].parsed and ev[20].message == ""


def test_paren_style_esxi_operation_id_column():
    ev = events(load("esxi8_paren_opid.log"))
    assert all(e.style is Style.PAREN for e in ev)
    assert (ev[0].level_code, ev[0].level, ev[0].thread, ev[0].opid) == \
        ("In(05)", Level.INFO, "vmx", None)
    assert ev[0].message.startswith("Log for VMware ESX pid=1053001")
    snap = ev[11]
    assert (snap.thread, snap.opid) == ("vmx", "vim-cmd-09-a45d")
    assert snap.message.startswith("SnapshotVMX_TakeSnapshot start: 'snapshot_exfill'")
    assert snap.timestamp == utc(2023, 12, 5, 17, 42, 40, 666000)
    assert (ev[16].level, ev[16].thread) == (Level.WARNING, "vcpu-1")
    assert (ev[17].level, ev[17].level_code) == (Level.ERROR, "Er(02)")


def test_paren_style_workstation_has_no_operation_id():
    ev = events(load("ws17_paren.log"))
    assert ev[0].opid is None and ev[0].message.startswith("Log for VMware Workstation")
    assert ev[10].message == "Bluetooth host backend not available."
    assert (ev[11].level, ev[11].level_code, ev[11].thread) == (Level.ERROR, "Cr(01)",
                                                                "host-43044")
    # forcing the column on a Workstation log would eat the first word: detection matters
    forced = list(vmlog.parse_lines(BytesSource(load("ws17_paren.log")), opid_column=True))
    assert forced[10].opid == "Bluetooth"


def test_legacy_style_has_no_timestamp():
    ev = events(load("ws7_legacy.log"))
    assert (ev[0].style, ev[0].time_text, ev[0].timestamp, ev[0].thread, ev[0].level) == \
        (Style.LEGACY, "Aug 20 20:09:03.972", None, "vmx", Level.UNKNOWN)


@pytest.mark.parametrize("line, expect", [
    ("2010-03-16T08:48:35.277Z| vcpu-0| Guest: VMQARESULT BEGIN",
     (Style.PIPE, "vcpu-0", None, Level.UNKNOWN, "Guest: VMQARESULT BEGIN")),
    ("2010-03-16T08:48:35.277Z| vcpu-2| I103: Guest: x",
     (Style.PIPE, "vcpu-2", "I103", Level.INFO, "Guest: x")),
    ("2023-12-05T17:42:40.666Z Db(10) vmx msg",
     (Style.PAREN, "vmx", "Db(10)", Level.VERBOSE, "msg")),
    ("2023-12-05T17:42:40.666Z Xx(03) vmx msg",
     (Style.PAREN, "vmx", "Xx(03)", Level.WARNING, "msg")),
    ("2023-12-05T17:42:40.666Z In(05) vcpu-0 - ",
     (Style.PAREN, "vcpu-0", "In(05)", Level.INFO, "")),
])
def test_parse_line_variants(line, expect):
    ev = vmlog.parse_line(line)
    assert (ev.style, ev.thread, ev.level_code, ev.level, ev.message) == expect


def test_unzoned_and_invalid_timestamps():
    naive = vmlog.parse_line("2014-08-18T20:05:58.197| vmx| I120: x")
    assert naive.parsed and naive.timestamp is None and naive.time_text.endswith(".197")
    bad = vmlog.parse_line("2014-13-45T20:05:58.197Z| vmx| I120: x")
    assert not bad.parsed and bad.to_dict()["message"] == bad.text
    assert not vmlog.parse_line("hello world").parsed
    plus = vmlog.parse_line("2020-05-01T10:00:00.500+0300| vmx| I005: y")
    assert plus.timestamp == utc(2020, 5, 1, 7, 0, 0, 500000)


# --- summary --------------------------------------------------------------------------------

def test_summary_workstation_12():
    s = summary(load("ws12_pipe_offset.log"))
    assert s.product == {"product": "Workstation", "version": "12.5.9", "build": "7535481",
                         "option": "Release", "pid": 9884}
    assert (s.hostname, s.config_file, s.sessions) == ("LAB-WS01", "C:\\VMs\\lab\\lab.vmx", 1)
    assert [sec.name for sec in s.dict_sections] == ["USER PREFERENCES", "CONFIGURATION",
                                                     "USER DEFAULTS", "HOST DEFAULTS"]
    assert s.dict_sections[1].path == "C:\\VMs\\lab\\lab.vmx"
    assert s.config() == {".encoding": "windows-1252", "config.version": "8",
                          "virtualHW.version": "12", "displayName": "lab",
                          "scsi0:0.fileName": "lab.vmdk", "memsize": "2048"}
    assert s.config("HOST DEFAULTS") == {"authd.client.port": "902"}
    assert s.dict_entries == 8
    assert s.first_timestamp == utc(2016, 8, 2, 14, 27, 30, 822000)
    assert s.last_timestamp == utc(2016, 8, 2, 15, 2, 12, 900000)
    assert s.non_monotonic == 1          # the VTHREAD line is stamped before its predecessor
    assert [(d.source, d.device, d.path) for d in s.disks[:2]] == [
        ("DISK: OPEN", "scsi0:0", "C:\\VMs\\lab\\lab.vmdk"),
        ("DISKLIB-DSCPTR", None, "lab-s001.vmdk")]
    link = s.disks[2]
    assert (link.create_type, link.sectors) == ("twoGbMaxExtentSparse", 41943040)
    assert [(m.name, m.detail) for m in s.milestones] == [
        ("log_start", None), ("power_on", None), ("exec_state", "poweredOn"),
        ("guest_request", "powered off"), ("panic", "example failure for the test sample"),
        ("exec_state", "poweredOff"), ("vmx_exit", "0")]
    assert [(e.line, e.name) for e in s.errors] == [(30, "E105")]
    assert dict(s.levels) == {"info": 30, "warning": 1, "error": 1}
    assert s.warnings == []


def test_summary_esxi67_disks_and_snapshots():
    s = summary(load("esxi67_pipe_utc.log"))
    assert s.product["product"] == "ESX" and s.product["build"] == "10302608"
    assert s.config()["ctkEnabled"] == "TRUE"
    flat = [d for d in s.disks if d.path.endswith("-flat.vmdk")][0]
    assert (flat.source, flat.size) == ("DISKLIB-VMFS", 42949672960)
    assert s.disk_files[0].endswith("/db01-000001.vmdk")
    assert len(s.disk_files) == 3
    snaps = [(m.name, m.detail, m.timestamp) for m in s.milestones if "snap" in m.name]
    assert snaps == [("snapshot_start", "nightly", utc(2019, 3, 10, 23, 0)),
                     ("snapshot_done", "nightly", utc(2019, 3, 10, 23, 0, 4, 250000))]
    assert s.milestones[-1].name == "consolidate_done"


def test_summary_esxi8_and_threads():
    s = summary(load("esxi8_paren_opid.log"))
    assert s.opid_column and s.hostname == "esx02.lab.example"
    assert s.config()["virtualHW.version"] == "20"
    assert s.threads["vcpu-0"] == 3 and s.threads["svga"] == 1
    assert [m.name for m in s.milestones] == [
        "log_start", "exec_state", "snapshot_start", "snapshot_done", "power_off_request",
        "exec_state", "vmx_exit"]


def test_tools_milestones():
    """VMware Tools starting in the guest and its version status, as the VMX logs them."""
    text = (b"2021-05-04T10:00:00.000Z| vmx| I125: Tools: Changing running status: 0 => 1.\n"
            b"2021-05-04T10:00:01.000Z| vmx| I125: VMXVmdb_SetToolsVersionStatus: status "
            b"value set to 'ok', 'current', install possible\n"
            b"2021-05-04T10:00:02.000Z| vmx| I125: Tools: [AppStatus] Last heartbeat value 5\n")
    s = summary(text)
    assert [(m.name, m.detail, m.timestamp) for m in s.milestones] == [
        ("tools_status", "0 => 1", utc(2021, 5, 4, 10)),
        ("tools_version", "status value set to 'ok', 'current', install possible",
         utc(2021, 5, 4, 10, 0, 1))]


def test_summary_legacy_warns_untimed():
    s = summary(load("ws7_legacy.log"))
    assert s.hostname == "lab-laptop" and s.product["version"] == "7.1.1"
    assert s.config("USER PREFERENCES") == {"pref.grabOnKeyPress": "FALSE",
                                            "pref.keyboardAndMouse.maxProfiles": "0"}
    assert s.first_timestamp is None and s.untimed_lines == 10
    assert any("no time zone or no year" in w for w in s.warnings)


def test_inspect_report_is_json():
    with FileSource(LOGS / "esxi8_paren_opid.log") as src:
        assert vmlog.sniff(src.read(0, 65536))
        r = vmlog.inspect(src)
    doc = json.loads(json.dumps(r.data))
    assert r.kind == "vmlog" and doc["total_lines"] == 21 and doc["opid_column"] is True
    assert doc["first_timestamp"] == "2023-12-05T17:40:00.001Z"
    assert doc["dict"][0]["entries"]["displayName"] == "web01"
    assert r.fields["product"] == "VMware ESX 8.0.2 build 22380479"
    assert [t.title for t in r.tables] == ["milestones", "disk opens", "errors"]


# --- line endings and accounting ------------------------------------------------------------

def test_crlf_gives_the_same_events():
    lf = load("ws17_paren.log")
    crlf = lf.replace(b"\n", b"\r\n")
    a, b = events(lf), events(crlf)
    assert [(e.message, e.timestamp, e.thread) for e in a] == \
        [(e.message, e.timestamp, e.thread) for e in b]
    assert summary(crlf).crlf_lines == 14 and summary(lf).crlf_lines == 0
    assert b[1].offset == len(crlf.split(b"\r\n")[0]) + 2


def test_every_line_is_accounted_for():
    data = (load("ws12_pipe_offset.log")[:400] + b"garbage line\n\x00\x00\x00\n\n"
            + load("esxi8_paren_opid.log") + b"no newline at the end")
    s = summary(data)
    ev = events(data)
    assert s.total_lines == len(ev) == data.count(b"\n") + 1
    assert s.parsed_lines + s.unparsed_lines == s.total_lines
    assert s.unparsed_lines == sum(not e.parsed for e in ev) >= 4
    assert s.unterminated_last_line
    assert [u.detail for u in s.unparsed_samples][-1] == "no newline at the end"
    assert [e.line for e in ev] == list(range(1, len(ev) + 1))


def test_degenerate_summary_lines():
    data = (b"2019-03-10T22:15:01.101Z| vmx| I125: Hostname=\n"
            b"2019-03-10T22:15:01.101Z| vmx| I125: Config file: \n"
            b"2019-03-10T22:15:01.101Z| vmx| I125: Log for VMware\n"
            b"2019-03-10T22:15:01.101Z| vmx| I125: DICT   orphan = \"entry\"\n"
            b"2019-03-10T22:15:01.101Z| vmx| I125: DISK: OPEN\n")
    s = summary(data)
    assert (s.hostname, s.config_file, s.product, s.sessions) == (None, None, None, 1)
    assert s.dict_sections == [] and s.disks == [] and s.parsed_lines == 5


def test_sniff():
    for name in ("ws12_pipe_offset.log", "esxi67_pipe_utc.log", "esxi8_paren_opid.log",
                 "ws17_paren.log", "ws7_legacy.log"):
        assert vmlog.sniff(load(name)), name
        assert vmlog.sniff(b"\xef\xbb\xbf" + load(name).replace(b"\n", b"\r\n"))
    for head in (b"", b"KDMV\x01\x00", b'.encoding = "UTF-8"\nconfig.version = "8"\n',
                 b"# Disk DescriptorFile\nversion=1\n", b"\xff" * 100,
                 b"2023-12-05 17:42:40 some other log\n"):
        assert not vmlog.sniff(head)


# --- hostile input --------------------------------------------------------------------------

def _expected_lines(data: bytes) -> int:
    return data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)


@FUZZ
@given(st.binary(max_size=4000))
def test_fuzz_random_bytes(data):
    try:
        s = summary(data)
        r = vmlog.inspect(BytesSource(data))
        json.dumps(r.data)
    except VmsiftError:
        return
    assert s.total_lines == _expected_lines(data) == s.parsed_lines + s.unparsed_lines
    vmlog.sniff(data)


SAMPLES = b"".join(load(n) for n in ("ws12_pipe_offset.log", "esxi8_paren_opid.log"))


@FUZZ
@given(st.lists(st.tuples(st.integers(0, len(SAMPLES) - 1), st.binary(min_size=1, max_size=8)),
                max_size=12))
def test_fuzz_mutated_sample(edits):
    data = bytearray(SAMPLES)
    for pos, patch in edits:
        data[pos:pos + len(patch)] = patch
    data = bytes(data)
    s = summary(data)
    assert s.total_lines == _expected_lines(data) == s.parsed_lines + s.unparsed_lines
    json.dumps(vmlog.inspect(BytesSource(data)).data)


PREFIXES = ["Hostname=", "Config file: ", "Log for VMware ", "DICT --- ", "DICT ", "DISK: OPEN ",
            "DISKLIB-LINK  : Opened '", "DISKLIB-VMFS  : \"", "Transitioned vmx/execState/val to ",
            "SnapshotVMX_TakeSnapshot start: '", "PANIC: ", "VMX has left the building: "]


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(PREFIXES), st.text(max_size=40),
                          st.sampled_from(["| vmx| I125: ", " In(05) vmx - ", " Er(02) x "])),
                max_size=20))
def test_fuzz_recognised_prefixes(items):
    data = "".join(f"2019-03-10T22:15:01.101Z{sep}{p}{t}\n" for p, t, sep in items)
    data = data.encode("utf-8", "surrogatepass")
    s = summary(data)
    assert s.total_lines == _expected_lines(data) == s.parsed_lines + s.unparsed_lines
    json.dumps(vmlog.inspect(BytesSource(data)).data)


def test_long_line_is_cut_with_bounded_memory(tmp_path: Path):
    path = tmp_path / "vmware.log"
    head = b"2023-12-05T17:40:00.001Z In(05) vmx - "
    with open(path, "wb") as f:
        f.write(head + b"A" * (10 << 20) + b"\n")
        f.write(head + b"after\n")
    tracemalloc.start()
    try:
        with FileSource(path) as src:
            s = vmlog.summarize(src)
            ev = list(vmlog.parse_lines(src))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20
    assert (s.total_lines, s.cut_lines, s.parsed_lines) == (2, 1, 2)
    assert len(ev[0].text.encode()) == vmlog.MAX_LINE
    assert ev[0].cut == len(head) + (10 << 20) - vmlog.MAX_LINE
    assert ev[1].message == "after" and ev[1].offset == len(head) + (10 << 20) + 1
    assert any("cut" in w for w in s.warnings)


def test_sparse_two_gib_of_zeros(tmp_path: Path):
    path = tmp_path / "zeros.log"
    with open(path, "wb") as f:
        f.write(b"2019-03-10T22:15:01.101Z| vmx| I125: Log for VMware ESX pid=1 version=6.7.0\n")
        f.truncate(2 << 30)
    tracemalloc.start()
    try:
        with FileSource(path) as src:
            s = vmlog.summarize(src)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20
    assert (s.total_lines, s.parsed_lines, s.unparsed_lines, s.cut_lines) == (2, 1, 1, 1)
    assert s.product["version"] == "6.7.0"


def test_workstation7_geometry_is_not_a_mode_and_relative_opens_join_absolute():
    # Workstation 7 writes the geometry where later versions write the mode; a disk opened
    # by its relative name and by its absolute path is one disk
    s = summary(b"Aug 20 20:09:04.408: vmx| Config file: /media/disk-1/XP/XP.vmx\n"
                b"Aug 20 20:09:04.839: vmx| DISK: OPEN '/media/disk-1/XP/XP.vmdk' "
                b"Geo (16383/16/63) BIOS Geo (0/0/0)\n"
                b"Aug 20 20:09:04.840: vmx| DISK: OPEN scsi0:0 'XP.vmdk' persistent R[]\n"
                b"Aug 20 20:09:04.841: vmx| DISK: OPEN scsi0:1 'data.vmdk' "
                b"independent-nonpersistent R[]\n"
                b"Aug 20 20:09:04.842: vmx| DISK: OPEN scsi0:2 '/other/data.vmdk' persistent\n")
    opens = [(d.device, d.path, d.mode, d.geometry) for d in s.disks]
    assert opens == [(None, "/media/disk-1/XP/XP.vmdk", None, "16383/16/63"),
                     ("scsi0:0", "XP.vmdk", "persistent", None),
                     ("scsi0:1", "data.vmdk", "independent-nonpersistent", None),
                     ("scsi0:2", "/other/data.vmdk", "persistent", None)]
    # data.vmdk is beside the .vmx, so not /other/data.vmdk
    assert s.disk_files == ["/media/disk-1/XP/XP.vmdk", "data.vmdk", "/other/data.vmdk"]
    assert s.to_dict()["disks"][0]["geometry"] == "16383/16/63"


def test_relative_open_without_config_file_joins_the_absolute_path_ending_with_it():
    s = summary(b"2016-08-02T14:27:31.000+02:00| vmx| I125: DISK: OPEN scsi0:0 "
                b"'C:\\VMs\\lab\\lab.vmdk' persistent R[]\n"
                b"2016-08-02T14:27:32.000+02:00| vmx| I125: DISK: OPEN scsi0:0 "
                b"'lab.vmdk' persistent R[]\n")
    assert s.disk_files == ["C:\\VMs\\lab\\lab.vmdk"]
