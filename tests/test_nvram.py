"""VMware .nvram: the MRVN container, CMOS, ESCD and the EFI variable store.

Fixtures: our spec-following writer (tests/fixtures/nvram_writer.py) for an EFI and a BIOS
VM, and the one public real file, ``tests/data/esx7.nvram`` of the virt-firmware sdist (an
ESXi 7 EFI VM). Oracle: virt-firmware's VMware varstore reader (``experimental/vmware.py``,
shipped only in the sdist, run as a subprocess) and ``virt-fw-vars --print``; ``cryptography``
checks the certificate names we pull out of the signature lists.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import struct
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fixtures import nvram_writer as w
from tests.fixtures.corpus import Archive, Item, Source, require
from tests.helpers import missing, mutate
from vmsift.errors import FormatError, LimitError, TruncatedError, VmsiftError
from vmsift.formats import efi, nvram
from vmsift.source import BytesSource, FileSource

VIRT_FW = Archive(
    "pypi-sdist:virt-firmware==26.10",
    "https://files.pythonhosted.org/packages/a9/60/"
    "483319a70dd87397ac82e8660bdb099cbce6a8e4e846f9c21344f09555af/virt_firmware-26.10.tar.gz",
    "be0554fb20b9046b8c5b24397e722cf67ce6ccd6cee44bf8689ded462b053908",
    169972,
    "GPL-2.0-only",
)
ESX7 = Item(
    "virt-firmware/esx7.nvram", "nvram",
    (Source(VIRT_FW, "virt_firmware-26.10/tests/data/esx7.nvram"),),
    "35098781586f95c254a23b9a6df0854dcbf668f3203384b488bcbc0e837884a8", 270840,
    "real ESXi 7 EFI VM .nvram: CMOS, ESCD, EFI_/NV with 25 variables", head=b"MRVN",
)
VMWARE_READER = Item(
    "virt-firmware/vmware.py", "nvram",
    (Source(VIRT_FW, "virt_firmware-26.10/experimental/vmware.py"),),
    "57b9a6f3f45d216bda4ed9063bc5d37c0a8ebfca9ae6c159257cc743bf5791e7", 3341,
    "virt-firmware's VMware varstore reader (test oracle, GPL, run as a subprocess)",
)


@pytest.fixture(scope="module")
def efi_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("nvram") / "efi-vm.nvram"
    path.write_bytes(w.build_efi())
    return path


@pytest.fixture(scope="module")
def efi_nv() -> nvram.Nvram:
    return nvram.read(BytesSource(w.build_efi(), "efi-vm.nvram"))


@pytest.fixture
def esx7(cache_dir) -> Path:
    return require(ESX7, cache_dir)


def oracle_variables(path: Path, cache_dir: Path, tmp_path: Path) -> list[dict]:
    """Variables as virt-firmware's VMware reader sees them (name, guid, attr, data hex)."""
    try:
        import virt.firmware.varstore.jstore  # noqa: F401
    except ImportError:
        missing("python package virt-firmware (pip install virt-firmware)")
    script = require(VMWARE_READER, cache_dir)
    out = tmp_path / "oracle.json"
    subprocess.run([sys.executable, str(script), "--input", str(path), "--out-json", str(out)],
                   check=True, capture_output=True, cwd=tmp_path, timeout=120)
    return json.loads(out.read_text())["variables"]


def compare_with_oracle(ours: nvram.Nvram, theirs: list[dict]) -> None:
    """Every variable the oracle lists matches ours in GUID, attributes and data.

    The oracle keys its list by name only, so of two variables with one name (different
    vendors) it keeps the last; we check that it lists exactly our set of names.
    """
    assert {v["name"] for v in theirs} == {v.name for v in ours.efi.variables}
    assert len(theirs) >= 10
    by_name: dict[str, list[nvram.Variable]] = {}
    for var in ours.efi.variables:
        by_name.setdefault(var.name, []).append(var)
    for t in theirs:
        var = by_name[t["name"]][-1]
        assert (var.guid, var.attributes, var.data.hex()) == (t["guid"], t["attr"], t["data"]), \
            t["name"]


# --- the EFI fixture -----------------------------------------------------------------------------

def test_sniff():
    assert nvram.sniff(w.build_efi()[:65536]) and nvram.sniff(w.build_bios())
    assert not nvram.sniff(b"KDMV") and not nvram.sniff(b"") and not nvram.sniff(b"MRV")


def test_container_entries(efi_nv):
    assert efi_nv.version == 1 and efi_nv.firmware == "efi" and efi_nv.warnings == []
    assert [(e.key, e.length) for e in efi_nv.entries] == [
        ("CMOS/timA", 4), ("CMOS/timB", 8), ("CMOS/", 128), ("CMOS/440", 128),
        ("CMOS/440v", 4), ("CMOS/440x", 128), ("ESCD/", 8192), ("EFI_/NV", 0x40000)]
    offsets = [e.offset for e in efi_nv.entries]
    assert offsets[0] == 8
    assert all(b.offset == a.offset + 12 + a.length for a, b in zip(efi_nv.entries[:-1],
                                                                    efi_nv.entries[1:],
                                                                    strict=True))
    assert efi_nv.entries[-1].payload_offset + 0x40000 == efi_nv.size
    assert [e.decoded_as for e in efi_nv.entries] == [
        "cmos-value", "cmos-value", "cmos", "cmos", "cmos-value", "cmos-value", "escd",
        "efi-varstore"]


def test_variables_match_writer(efi_nv):
    expected = w.efi_variables()
    got = efi_nv.efi.variables
    assert [(v.name, v.guid, v.attributes, v.data) for v in got] == \
        [(e.name, e.guid, e.attributes, e.data) for e in expected]
    store = efi_nv.efi
    assert store.size == 0x40000 and store.reserved == 0 and store.non_ff_after_used == 0
    assert store.used_size == 16 + sum(len(e.encode()) for e in expected)
    assert store.offset == efi_nv.entries[-1].payload_offset
    assert got[0].offset == store.offset + 16
    assert efi.attr_names(got[0].attributes) == [
        "NON_VOLATILE", "BOOTSERVICE_ACCESS", "RUNTIME_ACCESS",
        "TIME_BASED_AUTHENTICATED_WRITE_ACCESS"]
    assert store.get("T\u00ebst\u2603", w.TEST_VENDOR).data == bytes(range(40))


def test_authenticated_header(efi_nv):
    pk = efi_nv.efi.get("PK")
    assert pk.entry_size == pk.name_size + 40 + len(pk.data)
    assert pk.auth == {"timestamp": "2021-05-04T12:00:00Z", "cert_length": 24,
                       "cert_revision": 0x200, "cert_type": 0x0EF1,
                       "cert_type_guid": efi.EFI_CERT_EXTERNAL_MANAGEMENT,
                       "cert_type_name": "EFI_CERT_EXTERNAL_MANAGEMENT"}
    assert efi_nv.efi.get("KEK").auth["timestamp"] is None
    sb = efi_nv.efi.get("SbConfigState", w.VMWARE)
    assert sb.auth is not None and sb.value_kind == "byte" and sb.value == 1
    assert efi_nv.efi.get("Lang").auth is None


def test_well_known_values(efi_nv):
    get = efi_nv.efi.get
    assert (get("BootOrder").value_kind, get("BootOrder").value) == ("order",
                                                                   ["0000", "0001", "0002"])
    assert get("Timeout").value == 5 and get("BootCurrent").value == "0000"
    assert get("Lang").value == "eng" and get("PlatformLang").value == "en-US"
    assert get("ConOut").value == "PciRoot(0x0)/Pci(0xf,0x0)"
    assert get("MTC", "eb704011-1402-11d3-8e77-00a0c969723b").value == 7
    data = efi_nv.to_dict()["boot"]
    assert data["order"] == ["0000", "0001", "0002"] and data["timeout"] == 5
    assert data["current"] == "0000" and data["next"] is None


def test_boot_options(efi_nv):
    opts = efi_nv.boot_options()
    assert [(o.number, o.position, o.active, o.description, o.device_path) for o in opts] == [
        ("0000", 0, True, "EFI Virtual disk (0.0)", w.BOOT_DISK_TEXT),
        ("0001", 1, True, "EFI VMware Virtual SATA CDROM Drive (0.0)", w.BOOT_CD_TEXT),
        ("0002", 2, True, "EFI Network", w.BOOT_NET_TEXT),
        ("0003", None, False, "EFI Internal Shell", w.BOOT_SHELL_TEXT)]
    shell = efi_nv.efi.get("Boot0003").value
    assert shell["hidden"] and shell["category"] == "app" and shell["optional_data_hex"] == "0102"
    disk = efi_nv.efi.get("Boot0000").value
    assert [(n["type"], n["subtype"]) for n in disk["device_path_nodes"]] == [
        (2, 1), (1, 1), (1, 1), (3, 2), (4, 1), (4, 4), (0x7F, 0xFF)]
    assert disk["warnings"] == []


def test_signature_lists(efi_nv):
    pk = efi_nv.efi.get("PK").value
    assert len(pk) == 1 and pk[0]["type_name"] == "EFI_CERT_X509" and pk[0]["count"] == 1
    cert = pk[0]["signatures"][0]
    assert cert == {"owner": w.OWNER, "owner_name": None, "size": len(w.PK_CERT),
                    "sha256": hashlib.sha256(w.PK_CERT).hexdigest(),
                    "subject_cn": "vmsift test PK", "issuer_cn": "vmsift test PK"}
    db = efi_nv.efi.get("db", efi.EFI_IMAGE_SECURITY_DATABASE).value
    assert [(sl["type_name"], sl["count"]) for sl in db] == [("EFI_CERT_X509", 1),
                                                              ("EFI_CERT_SHA256", 2)]
    assert db[0]["signatures"][0]["issuer_cn"] == "vmsift test KEK"
    assert [s["data_hex"] for s in db[1]["signatures"]] == [h.hex() for h in w.DB_HASHES]
    dbx = efi_nv.efi.get("dbx", efi.EFI_IMAGE_SECURITY_DATABASE).value
    assert [s["data_hex"] for s in dbx[0]["signatures"]] == [h.hex() for h in w.DBX_HASHES]


def test_certificate_names_agree_with_cryptography():
    try:
        from cryptography import x509
        from cryptography.x509.oid import NameOID
    except ImportError:
        missing("python package cryptography (installed with virt-firmware)")
    for der in (w.PK_CERT, w.KEK_CERT, w.DB_CERT):
        cert = x509.load_der_x509_certificate(der)
        subject = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
        issuer = cert.issuer.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
        assert efi.certificate_cns(der) == (subject, issuer)
    assert efi.certificate_cns(b"\x30\x82\xff") == (None, None)


def test_cmos_banks(efi_nv):
    banks = {c.key: c for c in efi_nv.cmos}
    regs = banks["CMOS/"].registers
    assert regs["time"] == "2024-03-05T14:07:09" and regs["century"] == 20
    assert regs["status_a"] == {"value": 0x26, "update_in_progress": False, "divider": 2,
                                "rate": 6}
    assert regs["status_b"]["hour_24"] and not regs["status_b"]["binary"]
    assert regs["status_d"]["valid_ram"] and regs["checksum_ok"]
    assert regs["floppy_a"] == "1.44M 3.5in" and regs["floppy_b"] is None
    assert (regs["base_memory_kib"], regs["extended_memory_kib"]) == (640, 31744)
    assert banks["CMOS/440"].registers["time"] is None
    assert banks["CMOS/440v"].to_dict()["value"] == 4 and banks["CMOS/440x"].registers is None
    assert banks["CMOS/timB"].to_dict() == {"entry": "CMOS/timB", "offset": 0x18 + 12,
                                            "length": 8, "value": 0, "registers": None,
                                            "hex": "00" * 8}


def test_cmos_checksum_mismatch_warns():
    raw = bytearray(w.build_bios())
    cmos = next(e for e in nvram.read(BytesSource(bytes(raw))).entries if e.key == "CMOS/")
    raw[cmos.payload_offset + 0x20] ^= 0xFF
    nv = nvram.read(BytesSource(bytes(raw)))
    assert any("CMOS checksum" in m for m in nv.warnings)


def test_escd(efi_nv):
    esc = efi_nv.escd
    assert esc.directory_size == 31 and esc.unknown == 0x9E
    assert [(s["name"], s["offset"], s["size"], s["inside"]) for s in esc.sections] == [
        ("ESCD", 31, 62, True), ("BBSI", 93, 64, True), ("ELOG", 157, 256, True)]
    assert esc.config["offset"] == 31 and esc.config["size"] == 62
    assert esc.config["version"] == "2.1" and esc.config["board_count"] == 3
    assert [b["slot"] for b in esc.config["boards"]] == list(w.ESCD_BOARD_SLOTS)


def test_inspect_report(efi_file):
    with FileSource(efi_file) as src:
        report = nvram.inspect(src)
    assert report.kind == "nvram" and report.title == "VMware NVRAM (EFI firmware)"
    assert report.fields["firmware"] == "efi" and report.fields["entries"] == 8
    assert report.fields["EFI variables"] == len(w.efi_variables())
    assert report.fields["boot order"] == ("Boot0000 'EFI Virtual disk (0.0)', Boot0001 "
                                           "'EFI VMware Virtual SATA CDROM Drive (0.0)', "
                                           "Boot0002 'EFI Network'")
    assert report.fields["CMOS time"] == "2024-03-05T14:07:09"
    assert [t.title for t in report.tables] == ["Entries", "EFI variables", "Boot options"]
    assert report.tables[2].rows[0] == ["Boot0000", 0, True, "EFI Virtual disk (0.0)",
                                        w.BOOT_DISK_TEXT]
    assert json.loads(json.dumps(report.data)) == report.data
    assert set(report.data) == {"version", "size", "firmware", "entries", "cmos", "escd",
                                "efi", "boot"}
    assert report.warnings == []


def test_bios_vm():
    nv = nvram.read(BytesSource(w.build_bios(), "bios-vm.nvram"))
    assert nv.firmware == "bios" and nv.efi is None and nv.warnings == []
    assert len(nv.entries) == 7 and nv.boot_options() == [] and nv.boot_order() is None
    report = nvram.inspect(BytesSource(w.build_bios(), "bios-vm.nvram"))
    assert report.title == "VMware NVRAM (BIOS firmware)"
    assert report.data["efi"] is None and report.data["boot"] is None
    assert "EFI variables" not in report.fields and [t.title for t in report.tables] == [
        "Entries"]
    assert report.data["escd"]["config"]["board_count"] == 3


# --- oracles -------------------------------------------------------------------------------------

def test_fixture_against_virt_firmware(efi_file, efi_nv, cache_dir, tmp_path):
    compare_with_oracle(efi_nv, oracle_variables(efi_file, cache_dir, tmp_path))


def test_real_esxi7_against_virt_firmware(esx7, cache_dir, tmp_path):
    nv = nvram.read(FileSource(esx7))
    theirs = oracle_variables(esx7, cache_dir, tmp_path)
    compare_with_oracle(nv, theirs)
    assert len(nv.efi.variables) == 25 and len(theirs) == 24  # two "000C29367125" variables


def test_real_esxi7_boot_entries_against_virt_fw_vars(esx7, cache_dir, tmp_path):
    beside = Path(sys.executable).parent / "virt-fw-vars"
    tool = shutil.which("virt-fw-vars") or (str(beside) if beside.exists() else None)
    if tool is None:
        missing("tool 'virt-fw-vars' (pip virt-firmware)")
    theirs = oracle_variables(esx7, cache_dir, tmp_path)
    (tmp_path / "vars.json").write_text(json.dumps({"version": 2, "variables": theirs}))
    out = subprocess.run([tool, "-i", str(tmp_path / "vars.json"), "--print"], check=True,
                         capture_output=True, text=True, timeout=120).stdout
    pattern = r'^(Boot\d{4})\s*: boot entry: title="([^"]*)" devpath=(.*)$'
    printed = {m[0]: (m[1], m[2]) for m in re.findall(pattern, out, re.M)}
    ours = {f"Boot{o.number}": o for o in nvram.read(FileSource(esx7)).boot_options()}
    assert set(printed) == set(ours) == {"Boot0000", "Boot0001", "Boot0002"}
    for key, (title, devpath) in printed.items():
        assert ours[key].description == title
        their_pci = [int(x, 16) for x in re.findall(r"PCI\(dev=([0-9a-f]+):", devpath)]
        our_pci = [int(x, 16) for x in re.findall(r"/Pci\((0x[0-9a-f]+),", ours[key].device_path)]
        assert their_pci == our_pci and their_pci
    order = re.search(r"^BootOrder\s*: boot order: (.*)$", out, re.M).group(1)
    assert [x.strip() for x in order.split(",")] == nvram.read(FileSource(esx7)).boot_order()


def test_real_esxi7_values(esx7):
    report = nvram.inspect(FileSource(esx7))
    nv = nvram.read(FileSource(esx7))
    assert report.warnings == [] and nv.efi.used_size == 12637 and nv.size == 270840
    assert [e.key for e in nv.entries] == ["CMOS/timA", "CMOS/timB", "CMOS/", "CMOS/440",
                                           "CMOS/440v", "CMOS/440x", "ESCD/", "EFI_/NV"]
    regs = next(c for c in nv.cmos if c.key == "CMOS/").registers
    assert regs["checksum_ok"] and regs["century"] == 20 and regs["base_memory_kib"] == 640
    assert regs["time"] is None  # ESXi leaves the RTC registers at zero
    assert nv.escd.config["version"] == "2.1" and nv.escd.config["board_count"] == 7
    assert [s["name"] for s in nv.escd.sections] == ["ESCD", "BBSI", "ELOG"]
    opts = nv.boot_options()
    assert [(o.description, o.device_path) for o in opts] == [
        ("EFI Virtual disk (0.0)", "PciRoot(0x0)/Pci(0x15,0x0)/Pci(0x0,0x0)/Scsi(0x0,0x0)"),
        ("EFI VMware Virtual SATA CDROM Drive (0.0)",
         "PciRoot(0x0)/Pci(0x11,0x0)/Pci(0x3,0x0)/Sata(0x0,0x0,0x0)"),
        ("EFI Network", "PciRoot(0x0)/Pci(0x16,0x0)/Pci(0x0,0x0)/MAC(000C29367125,0x1)")]
    con_in = nv.efi.get("ConIn").value
    assert con_in == ("PciRoot(0x0)/Pci(0x7,0x0)/Acpi(PNP0303,0x0),"
                      "UsbClass(0xffff,0xffff,0x3,0x1,0x1)")
    dbx = nv.efi.get("dbx", efi.EFI_IMAGE_SECURITY_DATABASE).value
    assert [(sl["type_name"], sl["count"]) for sl in dbx] == [("EFI_CERT_SHA256", 77)]
    kek = nv.efi.get("KEK").value[0]["signatures"][0]
    assert kek["subject_cn"] == "Microsoft Corporation KEK CA 2011"
    assert kek["owner_name"] == "Microsoft"
    pk = nv.efi.get("PK").value
    assert pk[0]["type_name"] == "EFI_CERT_EXTERNAL_MANAGEMENT" and pk[0]["count"] == 1
    assert report.fields["SbConfigState"] == 1


def test_real_esxi7_certificates_against_cryptography(esx7):
    try:
        from cryptography import x509
        from cryptography.x509.oid import NameOID
    except ImportError:
        missing("python package cryptography (installed with virt-firmware)")
    nv = nvram.read(FileSource(esx7))
    seen = 0
    for name, guid in (("KEK", efi.EFI_GLOBAL_VARIABLE), ("db", efi.EFI_IMAGE_SECURITY_DATABASE)):
        lists, _ = efi.decode_signature_lists(nv.efi.get(name, guid).data)
        for sl in lists:
            for sig in sl.signatures:
                cert = x509.load_der_x509_certificate(sig.data)
                cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
                assert sig.subject_cn == (cns[0].value if cns else None)
                seen += 1
    assert seen == 5


# --- damage --------------------------------------------------------------------------------------

def test_bad_magic():
    with pytest.raises(FormatError) as e:
        nvram.read(BytesSource(b"MRVX" + bytes(20), "x.nvram"))
    assert e.value.offset == 0 and "x.nvram @ 0x0" in str(e.value)


@pytest.mark.parametrize("cut", ["header", "entry-header", "cmos-payload", "efi-payload"])
def test_truncated_names_the_offset(cut, efi_nv):
    raw = w.build_efi()
    entries = efi_nv.entries
    where = {"header": (6, 0), "entry-header": (entries[3].offset + 5, entries[3].offset),
             "cmos-payload": (entries[2].payload_offset + 100, entries[2].offset),
             "efi-payload": (len(raw) - 1, entries[-1].offset)}
    size, offset = where[cut]
    with pytest.raises(TruncatedError) as e:
        nvram.read(BytesSource(raw[:size], "cut.nvram"))
    assert e.value.offset == offset and e.value.source == "cut.nvram"
    assert f"cut.nvram @ {offset:#x}" in str(e.value)


def test_huge_entry_length_stays_bounded():
    raw = b"MRVN" + struct.pack("<I", 1) + b"EFI_NV\0\0" + struct.pack("<I", 0xFFFFFFF0) + \
        bytes(64)
    tracemalloc.start()
    try:
        with pytest.raises(TruncatedError) as e:
            nvram.read(BytesSource(raw, "huge.nvram"))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert e.value.offset == 8 and "4294967280" in str(e.value)
    assert peak < 1 << 20


def test_huge_sizes_inside_the_store_stay_bounded():
    store = b"VMWNVRAM" + struct.pack("<II", 0, 0xFFFFFFF0)
    store += w.g(w.GLOBAL) + struct.pack("<III", 7, 0xFFFFFFF0, 0xFFFFFFF0)
    raw = w.container([w.entry(b"EFI_", b"NV", store.ljust(4096, b"\xff"))])
    tracemalloc.start()
    try:
        nv = nvram.read(BytesSource(raw, "huge.nvram"))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20
    assert nv.efi.variables == [] and any("used size" in m for m in nv.warnings)
    assert any("beyond the used area" in m and "0x24" in m for m in nv.warnings)


def test_damaged_variable_keeps_earlier_ones():
    variables = w.efi_variables()
    good = b"".join(v.encode() for v in variables[:3])
    bad = bytearray(variables[3].encode())
    bad[20:24] = struct.pack("<I", 0x7FFFFFFF)  # entry size
    body = good + bytes(bad)
    store = (b"VMWNVRAM" + struct.pack("<II", 0, 16 + len(body)) + body).ljust(0x1000, b"\xff")
    nv = nvram.read(BytesSource(w.container([w.entry(b"EFI_", b"NV", store)]), "d.nvram"))
    assert [v.name for v in nv.efi.variables] == ["PK", "KEK", "db"]
    bad_at = nv.entries[0].payload_offset + 16 + len(good)
    assert any(f"variable at {bad_at:#x}" in m for m in nv.warnings)


def test_leftovers_after_used_area_warn():
    store = bytearray(w.varstore(w.efi_variables()[:2], 0x1000))
    store[-10:-6] = b"junk"
    nv = nvram.read(BytesSource(w.container([w.entry(b"EFI_", b"NV", bytes(store))])))
    assert nv.efi.non_ff_after_used == 4 and any("0xFF" in m for m in nv.warnings)


def test_store_without_magic_warns():
    nv = nvram.read(BytesSource(w.container([w.entry(b"EFI_", b"NV", b"\xff" * 64)])))
    assert nv.firmware == "efi" and nv.efi is None
    assert any("VMWNVRAM" in m for m in nv.warnings)


def test_too_many_entries():
    raw = w.container([w.entry(b"CMOS", b"x", b"")] * (nvram.MAX_ENTRIES + 1))
    with pytest.raises(LimitError):
        nvram.read(BytesSource(raw))


# --- device paths --------------------------------------------------------------------------------

def test_device_path_nodes():
    keyboard = w.node(2, 1, w.u32(0x030141D0) + w.u32(0))
    cdrom = w.node(4, 2, w.u32(1) + struct.pack("<QQ", 0x10, 0x20))
    path = efi.decode_device_path(w.pci_root(1) + w.pci(2, 1) + keyboard + w.node(0x7F, 1)
                                  + cdrom + w.END)
    assert path.text == "PciRoot(0x1)/Pci(0x2,0x1)/Keyboard(0x0),CDROM(0x1,0x10,0x20)"
    assert path.warnings == []
    nvme = w.node(3, 23, w.u32(1) + bytes(range(1, 9)))
    assert efi.decode_device_path(nvme + w.END).text == "NVMe(0x1,08-07-06-05-04-03-02-01)"
    mbr = w.node(4, 1, w.u32(2) + struct.pack("<QQ", 63, 1000) + w.u32(0xA1B2C3D4)
                 + bytes(12) + bytes([1, 1]))
    assert efi.decode_device_path(mbr + w.END).text == "HD(2,MBR,0xa1b2c3d4,0x3f,0x3e8)"


def test_device_path_damage():
    no_end = efi.decode_device_path(w.pci_root(0))
    assert no_end.text == "PciRoot(0x0)" and no_end.warnings == ["device path has no end node"]
    bad = efi.decode_device_path(w.pci_root(0) + b"\x01\x01\x02\x00")
    assert bad.text == "PciRoot(0x0)" and "bad length 2" in bad.warnings[0]
    long = efi.decode_device_path(w.pci_root(0) + b"\x01\x01\xff\x00")
    assert "bad length 255" in long.warnings[0]


def test_load_option_damage():
    with pytest.raises(FormatError):
        efi.decode_load_option(b"\x01\x00")
    opt = efi.decode_load_option(w.u32(1) + w.u16(500) + w.ucs2z("X") + w.pci_root(0))
    assert opt.description == "X" and opt.device_path.text == "PciRoot(0x0)"
    assert any("runs past" in m for m in opt.warnings)


# --- fuzzing -------------------------------------------------------------------------------------

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SEEDS = [w.build_efi(), w.build_bios()]


def decode(data: bytes) -> None:
    try:
        report = nvram.inspect(BytesSource(data, "fuzz.nvram"))
    except VmsiftError as e:
        assert e.source == "fuzz.nvram"
        return
    json.dumps(report.data)


@FUZZ
@given(st.binary(max_size=4096))
def test_fuzz_random(data):
    decode(data)
    decode(b"MRVN\x01\x00\x00\x00" + data)


@FUZZ
@given(st.sampled_from(range(len(SEEDS))), st.data())
def test_fuzz_mutated(seed, data):
    # half the damage aimed at the metadata: headers and variable store
    raw = mutate(data, SEEDS[seed], hot=0x21ec + 12 + 0x1200)
    decode(raw)


@FUZZ
@given(st.binary(max_size=1024))
def test_fuzz_efi_decoders(data):
    efi.decode_device_path(data)
    efi.decode_signature_lists(data)
    efi.certificate_cns(data)
    try:
        efi.decode_load_option(data)
    except FormatError:
        pass
    glob, image = efi.EFI_GLOBAL_VARIABLE, efi.EFI_IMAGE_SECURITY_DATABASE
    for name, guid in (("Boot0001", glob), ("BootOrder", glob), ("db", image), ("ConIn", glob),
                       ("Timeout", glob), ("PK", glob)):
        kind, value, warnings = efi.decode_value(name, guid, data)
        json.dumps(value)


def test_second_store_and_oversized_cmos_warn():
    store = w.varstore(w.efi_variables()[:1], 0x1000)
    raw = w.container([w.entry(b"CMOS", b"", bytes(nvram.MAX_CMOS + 1)),
                       w.entry(b"EFI_", b"NV", store), w.entry(b"EFI_", b"NV", store)])
    nv = nvram.read(BytesSource(raw))
    assert [v.name for v in nv.efi.variables] == ["PK"] and nv.cmos == []
    assert any("another 'EFI_/NV' entry" in m for m in nv.warnings)
    assert any("CMOS entry 'CMOS/'" in m and "not decoded" in m for m in nv.warnings)
