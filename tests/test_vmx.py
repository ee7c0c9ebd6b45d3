"""The dictionary tokenizer and the .vmx typed view."""

from pathlib import Path

import pytest

from vmsift.formats import dictfile, vmx
from vmsift.inspect import inspect_path

from tests.helpers import vmsift

DEMO = Path(__file__).resolve().parent.parent / "examples" / "demo-vm"


def test_demo_vmx_typed_view():
    conf = vmx.parse((DEMO / "demo.vmx").read_bytes())
    assert conf.name == 'Demo "web" server #1'
    assert conf.get("annotation") == "Front-end web server\nOwner: ops|web"
    assert (conf.guest_os, conf.hardware_version, conf.memory_mb, conf.cpus) == \
        ("ubuntu-64", 19, 4096, 2)
    assert conf.cores_per_socket == 2 and conf.firmware == "efi" and not conf.encrypted
    devices = {d.id: d for d in conf.devices}
    os_disk = devices["scsi0:0"]
    assert (os_disk.kind, os_disk.backing, os_disk.mode, os_disk.present) == \
        ("disk", "demo-000003.vmdk", "persistent", True)
    assert devices["scsi0:1"].mode == "independent-persistent"
    assert devices["scsi0:2"].mode == "independent-nonpersistent"
    cd = devices["sata0:0"]
    assert (cd.kind, cd.start_connected) == ("cdrom", False)
    assert cd.backing == "/vmfs/volumes/datastore1/iso/ubuntu-22.04.iso"
    assert devices["scsi0"].kind == "scsi-controller" and devices["scsi0"].device_type == "pvscsi"
    nic0, nic1 = devices["ethernet0"], devices["ethernet1"]
    assert (nic0.kind, nic0.device_type, nic0.backing, nic0.start_connected) == \
        ("nic", "vmxnet3", "VM Network", True)
    assert nic0.opt("generatedAddress") == "00:50:56:9a:12:34"
    assert (nic1.device_type, nic1.start_connected) == ("e1000e", False)
    serial = devices["serial0"]
    assert (serial.kind, serial.device_type, serial.backing) == ("serial", "file", "serial0.log")
    assert devices["usb:0"].kind == "usb-device" and devices["usb:0"].device_type == "hid"
    assert devices["usb_xhci"].kind == "usb-controller"
    assert devices["floppy0"].present is False
    assert [d.id for d in conf.disks()] == ["scsi0:0", "scsi0:1", "scsi0:2"]
    assert conf.files()["nvram"] == "demo.nvram" and conf.files()["vmxf"] == "demo.vmxf"
    data = conf.to_dict()
    assert data["identity"]["uuid_bios"] == "42 1a 6b 3c 9d 2e 4f 10-8a 7b 6c 5d 4e 3f 2a 1b"
    assert data["secure_boot"] is True and data["change_tracking"] is True


def test_keys_as_written_duplicates_and_comments():
    d = dictfile.parse((DEMO / "demo.vmx").read_bytes())
    assert d.duplicates() == ["tools.synctime"]
    assert d.get("TOOLS.SYNCTIME") == "TRUE"  # last line wins, keys ignore case
    assert [v for k, v in d.items() if k == "tools.syncTime"] == ["FALSE", "TRUE"]
    name_line = next(ln for ln in d.lines if ln.key == "displayName")
    assert name_line.raw_value == "Demo |22web|22 server |231"
    assert any(ln.is_comment for ln in d.lines)
    assert d.items()[0] == (".encoding", "UTF-8")


def test_round_trip_and_set_rewrites_one_line():
    raw = (DEMO / "demo.vmx").read_bytes()
    conf = vmx.parse(raw)
    assert conf.dump() == raw
    conf.dictionary.set("memSize", "8192")
    conf.dictionary.set("annotation", 'say "hi"|bye\n#1')
    out = conf.dump()
    assert b'memSize = "8192"\n' in out and b'say |22hi|22|7Cbye|0A|231' in out
    again = vmx.parse(out)
    assert again.memory_mb == 8192 and again.get("annotation") == 'say "hi"|bye\n#1'
    changed = [a for a, b in zip(raw.splitlines(), out.splitlines()) if a != b]
    assert len(changed) == 2 and len(out.splitlines()) == len(raw.splitlines())
    conf.dictionary.set("newKey", "v")
    assert conf.dump().endswith(b'newKey = "v"\n')


@pytest.mark.parametrize("raw", [
    b'.encoding = "windows-1252"\r\ndisplayName = "caf\xe9 \x81"\r\n# comment \xff\r\nno newline',
    b'\xef\xbb\xbf.encoding = "UTF-8"\ndisplayName = "\xe2\x82\xac"\n\n\n',
    b'displayName = "broken utf-8 \xc3\x28"\n   indented = "x"   \nkey=bare\n',
    b'.encoding = "x-unknown"\nmemsize = "1"',
    b"",
])
def test_round_trip_is_byte_exact(raw):
    assert dictfile.parse(raw).dump() == raw


def test_encoding_is_honoured():
    d = dictfile.parse(b'.encoding = "windows-1252"\ndisplayName = "caf\xe9"\n')
    assert d.get("displayName") == "café" and d.encoding == "cp1252"
    d = dictfile.parse(b'.encoding = "x-unknown"\nmemsize = "1"')
    assert d.warnings and "x-unknown" in d.warnings[0]


def test_unparsable_lines_are_kept_and_warned():
    d = dictfile.parse(b'a = "1"\nthis is not an assignment\nb = "2"\n')
    assert d.get("b") == "2" and "line 2" in d.warnings[0]


def test_inspect_vmx_report():
    report = inspect_path(DEMO / "demo.vmx")
    assert report.kind == "vmx" and report.detected_by == "content"
    assert report.fields["name"] == 'Demo "web" server #1'
    entries = report.data["dictionary"]["entries"]
    assert entries[3] == {"line": 4, "key": "displayName", "value": 'Demo "web" server #1',
                          "raw_value": "Demo |22web|22 server |231"}
    assert report.data["dictionary"]["comments"][0]["line"] == 14
    assert any("tools.synctime" in w for w in report.warnings)
    table = report.tables[0]
    assert ["scsi0:1", "disk", None, "demo_data.vmdk", "independent-persistent", True, None] \
        in table.rows


def test_encrypted_vmx_is_recognised():
    raw = b'.encoding = "UTF-8"\ndisplayName = "x"\nencryption.keySafe = "vmware:key/list/()"\n' \
          b'encryption.data = "AAAA"\n'
    assert vmx.sniff(raw) and vmx.parse(raw).encrypted


@pytest.mark.parametrize("first", [True, False])
def test_a_50_mb_value_names_its_line_and_the_limit(tmp_path, first):
    value = b'annotation = "' + b"A" * (50 << 20) + b'"\n'
    head = b'.encoding = "UTF-8"\nconfig.version = "8"\nvirtualHW.version = "19"\n'
    path = tmp_path / "big.vmx"
    path.write_bytes(value + head if first else head + value)
    out = vmsift("inspect", path)
    assert out.returncode == 3, out.stderr
    assert f"more than the {vmx.MAX_SIZE} allowed" in out.stderr
    assert f"line {1 if first else 4} ('annotation')" in out.stderr


def test_a_vmx_that_its_content_test_misses_is_decoded_by_name(tmp_path):
    # a first line longer than the content test reads: decoded because of its name
    path = tmp_path / "long.vmx"
    path.write_bytes(b'annotation = "' + b"A" * (1 << 20) + b'"\nmemsize = "2048"\n')
    report = inspect_path(path)
    assert (report.kind, report.detected_by) == ("vmx", "extension")
    assert report.fields["memory"] is not None and not report.warnings
