"""Oracle VM vm.cfg: decoded values, byte-exact round trip, set(), hostile input, fuzzing.

Python's own literal reader (``ast.literal_eval``) is used here, in tests only, as the
oracle for values: xm read these files as Python, so Python's grammar is the reference.
The library itself never evaluates anything.
"""

from __future__ import annotations

import ast
import math
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vmsift.errors import FormatError, LimitError, VmsiftError
from vmsift.formats import vmcfg, vmsd, vmtm, vmx, vmxf
from vmsift.formats.vmdk import descriptor
from vmsift.source import ByteSource, BytesSource

from .fixtures.corpus import corpus_files, require
from .helpers import FIXTURES, sample

TEXT = FIXTURES / "text"
CFGS = sorted(TEXT.glob("*vm.cfg"))


def load(name: str) -> bytes:
    return (TEXT / name).read_bytes()


# ---------------------------------------------------------------------------------------
# Decoded values


def test_ovm3_pvm_values():
    cfg = vmcfg.parse(load("ovm3_pvm_vm.cfg"))
    assert cfg.simple_name == "ol6-db01"
    assert cfg.name == "0004fb00000600007c3e9a2b44f1d005"
    assert cfg.uuid == "0004fb00-0006-0000-7c3e-9a2b44f1d005"
    assert (cfg.memory_mib, cfg.maxmem_mib, cfg.vcpus, cfg.maxvcpus) == (8192, 16384, 2, 4)
    assert cfg.domain_type == "xen_pvm"
    assert cfg.get("OVM_os_type") == "Oracle Linux 6"
    assert cfg.high_availability is True
    assert cfg.get("bootloader") == "/usr/bin/pygrub"
    assert (cfg.get("on_crash"), cfg.get("on_poweroff"), cfg.get("on_reboot")) == (
        "restart", "destroy", "restart")
    root, shared, cd = cfg.disks
    assert (root.backend, root.device, root.mode, root.shared, root.cdrom) == (
        "file", "xvda", "w", False, False)
    assert root.repository_id == "0004fb0000030000aeaca859e4a8f8c0"
    assert root.repository_dir == "VirtualDisks"
    assert root.disk_id == "0004fb0000120000c444117fd87ea251"
    assert root.filename == "0004fb0000120000c444117fd87ea251.img"
    assert (shared.backend, shared.path, shared.device, shared.mode) == (
        "phy", "/dev/mapper/3600144f0d7a1b2c3000052f1e0c20007", "xvdb", "w!")
    assert shared.shared and shared.writable and shared.repository_id is None
    assert cd.cdrom and cd.device == "xvdc" and cd.writable is False
    assert (cd.repository_dir, cd.disk_id) == ("ISOs", "0004fb0000150000e14c811ebbf84f0b")
    assert cfg.vifs == [
        {"mac": "00:21:f6:00:00:1a", "bridge": "0a0a0a00", "type": "netfront"},
        {"mac": "00:21:f6:00:00:1b", "bridge": "c0a80100", "type": "netfront"}]
    assert cfg.vnc() == {"type": "vnc", "vncunused": "1", "vnclisten": "127.0.0.1",
                         "keymap": "en-us"}
    assert cfg.warnings == []


def test_ovm3_hvm_values():
    cfg = vmcfg.parse(load("ovm3_hvm_vm.cfg"))
    assert cfg.simple_name == "ESXi-01"
    assert cfg.domain_type == "xen_hvm" and cfg.get("builder") == "hvm"
    assert cfg.high_availability is False
    assert cfg.memory_mib == 4096 and cfg.maxmem_mib is None
    assert cfg.get("cpu_weight") == 27500 and cfg.get("OVM_description") == ""
    disk, iso = cfg.disks
    assert disk.repository_id == "0004fb00000300001e4ee7d261313647"
    assert iso.cdrom and iso.device == "xvdb" and iso.mode == "r"
    assert iso.repository_id == "0004fb0000030000598e525857751f9a"
    assert cfg.vifs == [{"mac": "00:21:f6:5b:b5:f7", "bridge": "10238073c2"}]
    assert cfg.vnc() == {"vnc": 1, "vnclisten": "127.0.0.1", "vncunused": 1,
                         "keymap": "pt-br"}


def test_exadata_values_dicts_and_string_numbers():
    cfg = vmcfg.parse(load("exadata_pvhvm_vm.cfg"))
    assert cfg.memory_mib == 65536 and cfg.get("memory") == "65536"  # written as a string
    assert (cfg.vcpus, cfg.maxvcpus) == (8, 68)
    assert cfg.get("on_crash") == "coredump-restart"
    assert cfg.get("ib_pkeys") == [
        {"pf": "03:00.0", "port": "1", "pkey": ["0x2a10", "0xa016"]},
        {"pf": "03:00.0", "port": "2", "pkey": ["0x2a10", "0xa016"]}]
    assert cfg.domain_type == "xen_hvm"
    extra = cfg.disks[2]
    assert extra.path == "/EXAVMIMAGES/GuestImages/client01vm08.example.com/u02_extra.img"
    assert extra.repository_id is None
    assert [v["bridge"] for v in cfg.vifs] == ["vmbondeth0", "vmbondeth1"]


def test_ovm2_values_comments_multiline_and_continuation():
    cfg = vmcfg.parse(load("ovm2_running_pool_vm.cfg"))
    assert cfg.name == "42_web01" and cfg.simple_name is None
    assert cfg.domain_type == "xen_pvm"
    assert cfg.get("extra") == "console=hvc0 selinux=0"
    assert cfg.get("vif_other_config") == []
    disks = cfg.disks
    assert [d.device for d in disks] == ["xvda", "xvdb", "xvdc"]
    assert disks[0].repository_dir == "running_pool"
    assert disks[2].shared and disks[2].repository_dir == "sharedDisk"
    assert disks[2].disk_id == "ocfs_vote01"
    assert cfg.vnc()["vncpasswd"] == "oracle"
    assert [v["mac"] for v in cfg.vifs] == ["00:16:3E:2A:64:01", "00:16:3E:2A:64:02"]


@pytest.mark.parametrize("path", CFGS, ids=lambda p: p.name)
def test_values_match_python_literals(path: Path):
    """Every statement's value equals what Python reads from the same literal text."""
    cfg = vmcfg.parse(path.read_bytes())
    assert cfg.statements
    for s in cfg.statements:
        assert s.value == ast.literal_eval(s.value_text.replace("\\\n", "")), s.name


def test_disk_spec_variants():
    d = vmcfg.parse_disk("tap:aio:/OVS/running_pool/vm1/System.img,ioemu:hda,w")
    assert (d.backend, d.path, d.device, d.mode) == (
        "tap:aio", "/OVS/running_pool/vm1/System.img", "hda", "w")
    d = vmcfg.parse_disk("file:/OVS/Repositories/r1/ISOs/x.iso,hdc:cdrom,r")
    assert (d.device, d.cdrom, d.repository_id, d.disk_id) == ("hdc", True, "r1", "x")
    d = vmcfg.parse_disk("phy:/dev/sdb")
    assert d.problem and d.backend == "phy" and d.path == "/dev/sdb" and d.device is None
    d = vmcfg.parse_disk("file:/data/a,b.img,xvde,r!")
    assert (d.path, d.device, d.mode, d.shared, d.writable) == (
        "/data/a,b.img", "xvde", "r!", True, False)


def test_xl_disk_specs_and_type():
    d = vmcfg.parse_disk("/dev/vg/guest-volume,raw,xvda,rw")
    assert (d.path, d.format, d.device, d.mode, d.writable) == (
        "/dev/vg/guest-volume", "raw", "xvda", "w", True)
    d = vmcfg.parse_disk("format=qcow2,vdev=hdc,devtype=cdrom,access=ro,target=/iso/a,b.iso")
    assert (d.path, d.format, d.device, d.cdrom, d.mode) == ("/iso/a,b.iso", "qcow2", "hdc",
                                                             True, "r")
    assert vmcfg.parse(b'type = "pvh"\nname = "x"\n').domain_type == "xen_pvh"


# Real xm / xl configs from the libvirt and Xen source packages (tests/fixtures/corpus.py).
CORPUS_EXPECT = {
    "libvirt/xm-test-escape-paths.cfg": (
        "XenGuest2&test", "xen_hvm", 394,
        [("phy", "/dev/HostVG/XenGuest2", "hda", "w", False),
         ("phy", "/dev/HostVG/XenGuest'\"", "hdb", "w", False),
         ("file", "/root/boot.iso&test", "hdc", "r", True)]),
    "libvirt/xm-test-paravirt-new-pvfb.cfg": (
        "XenGuest1", "xen_pvm", 394, [("phy", "/dev/HostVG/XenGuest1", "xvda", "w", False)]),
    "libvirt/xm-test-pci-devs.cfg": (
        "test", "xen_hvm", 350, [("phy", "/dev/sda8", "hda", "w", False),
                                 (None, None, "hdc", "r", True)]),
    "xen/xlexample.hvm": (
        "example.hvm", "xen_hvm", 128, [(None, "/dev/vg/guest-volume", "xvda", "w", False)]),
    "xen/xlexample.pvlinux": (
        "example.pvlinux", "xen_pvm", 128, [(None, "/dev/vg/guest-volume", "xvda", "w", False)]),
}


@pytest.mark.parametrize("item", corpus_files("xen-cfg"))
def test_real_xen_configs(item, cache_dir):
    data = require(item, cache_dir).read_bytes()
    assert vmcfg.sniff(data)
    cfg = vmcfg.parse(data, item.name)
    assert cfg.dump() == data
    for s in cfg.statements:  # Python's literal reader agrees on every value
        assert s.value == ast.literal_eval(s.value_text.replace("\\\n", "")), s.name
    name, dtype, memory, disks = CORPUS_EXPECT[item.name]
    assert (cfg.name, cfg.domain_type, cfg.memory_mib) == (name, dtype, memory)
    assert [(d.backend, d.path, d.device, d.mode, d.cdrom) for d in cfg.disks] == disks
    assert cfg.warnings == []


def test_duplicate_keys_last_wins_with_warning():
    cfg = vmcfg.parse(b"memory = 512\nname = 'a'\nmemory = 1024\n")
    assert cfg.memory_mib == 1024 and cfg.duplicates() == ["memory"]
    assert any("memory" in w for w in cfg.warnings)


def test_literal_forms():
    text = (b"a = '''x\n'y'\nz'''\nb = r'\\d+' \"c\"\nc = (1,)\nd = ()\ne = (7)\n"
            b"f = -0x1F\ng = 0755\nh = 1_000\ni = 2.5e3\nj = None\nk = {'x': (1, 2)}\n"
            b"l = 'caf\\xe9 \\u00e9 \\101 \\q'\nm = 5L\nn = [\n  1,  # one\n  2,\n]\n; o = 1;\n")
    v = vmcfg.parse(text).values()
    assert v == {"a": "x\n'y'\nz", "b": "\\d+c", "c": (1,), "d": (), "e": 7, "f": -31,
                 "g": 493, "h": 1000, "i": 2500.0, "j": None, "k": {"x": (1, 2)},
                 "l": "café é A \\q", "m": 5, "n": [1, 2], "o": 1}


# ---------------------------------------------------------------------------------------
# Round trip and set()


def _variants(data: bytes) -> list[bytes]:
    return [data, data.replace(b"\n", b"\r\n"), b"\xef\xbb\xbf" + data, data.rstrip(b"\n"),
            b"# comment\n\n" + data + b"\n# trailing comment without newline"]


@pytest.mark.parametrize("path", CFGS, ids=lambda p: p.name)
def test_round_trip_byte_exact(path: Path):
    for data in _variants(path.read_bytes()):
        assert vmcfg.parse(data).dump() == data


def test_round_trip_undecodable_bytes():
    data = b"name = 'caf\xe9'\nmemory = 512\n"  # latin-1, not UTF-8
    cfg = vmcfg.parse(data)
    assert cfg.dump() == data and cfg.memory_mib == 512


def test_set_rewrites_one_value_only():
    data = load("ovm3_pvm_vm.cfg")
    cfg = vmcfg.parse(data)
    cfg.set("memory", 12288)
    out = cfg.dump()
    old, new = data.split(b"\n"), out.split(b"\n")
    assert len(old) == len(new)
    changed = [(a, b) for a, b in zip(old, new) if a != b]
    assert changed == [(b"memory = 8192", b"memory = 12288")]
    assert vmcfg.parse(out).memory_mib == 12288


def test_set_multiline_list_and_append():
    data = load("ovm2_running_pool_vm.cfg")
    cfg = vmcfg.parse(data)
    cfg.set("disk", ["file:/OVS/running_pool/42_web01/System.img,xvda,w"])
    cfg.set("OVM_simple_name", "web01 'prod'")
    out = cfg.dump()
    assert out.startswith(data.split(b"disk = [")[0] + b"disk = ['file:")
    assert b"# shared between the RAC nodes" not in out  # was inside the old value
    assert b"memory = '2048'\n" in out  # untouched
    again = vmcfg.parse(out)
    assert [d.device for d in again.disks] == ["xvda"]
    assert again.simple_name == "web01 'prod'"
    assert out.endswith(b"OVM_simple_name = 'web01 \\'prod\\''\n")


def test_set_refuses_bad_names_and_values():
    cfg = vmcfg.parse(b"a = 1\n")
    with pytest.raises(ValueError):
        cfg.set("a.b", 1)
    with pytest.raises(TypeError):
        cfg.set("a", object())
    with pytest.raises(ValueError):
        cfg.set("a", float("nan"))


# ---------------------------------------------------------------------------------------
# Errors and hostile input


def _error(data: bytes, cls=FormatError) -> VmsiftError:
    with pytest.raises(cls) as info:
        vmcfg.parse(data, "vm.cfg")
    assert info.value.source == "vm.cfg"
    return info.value


def test_unterminated_string_position():
    err = _error("name = 'é'\nuuid = 'abc\nmemory = 1\n".encode())
    assert "line 2:8" in str(err) and "not closed" in str(err)
    assert err.offset == len("name = 'é'\nuuid = ".encode())


def test_unterminated_list_names_its_start():
    err = _error(b"memory = 1\ndisk = ['a',\n 'b',\n")
    assert "line 2:8" in str(err) and "never closed" in str(err) and err.offset == 18


@pytest.mark.parametrize("text, message", [
    (b"memory = 512 * 2\n", "end of statement"),
    (b"memory = size\n", "not a literal"),
    (b"x = __import__('os').system('id')\n", "not a literal"),
    (b"import os\n", "'=' expected"),
    (b"disk = ['a' 'b' 3]\n", "',' or ']'"),
    (b"disk = ['a', ]]\n", "end of statement"),
    (b"disk = ('a']\n", "does not close"),
    (b"vif = {'a' 1}\n", "':' expected"),
    (b"a = {[1]: 2}\n", "plain value"),
    (b"a = 09\n", "octal"),
    (b"a = 1j\n", "complex"),
    (b"a =\nb = 2\n", "value expected"),
    (b"= 3\n", "statement expected"),
    (b"a = '\\x4'\n", "\\x escape"),
    (b"a = 1 b = 2\n", "end of statement"),
    (b"a == 2\n", "'=' expected"),
])
def test_syntax_errors(text: bytes, message: str):
    assert message in str(_error(text))


def test_limits():
    assert "nesting" in str(_error(b"a = " + b"[" * 100_000, LimitError))
    assert "nesting" in str(_error(b"a = " + b"(" * 33 + b")" * 33, LimitError))
    vmcfg.parse(b"a = " + b"[" * 32 + b"]" * 32)  # the limit itself is fine
    err = _error(b"a = '" + b"x" * (2 * 1024 * 1024) + b"'\n", LimitError)
    assert "longer than" in str(err) and err.offset == 4
    assert "digits" in str(_error(b"a = " + b"9" * 5000 + b"\n", LimitError))
    assert "out of range" in str(_error(b"a = 1e999\n", LimitError))
    many = b"a = [" + b"0," * (vmcfg.MAX_ITEMS + 1) + b"]\n"
    assert "values" in str(_error(many, LimitError))
    stmts = b"".join(b"k%d = 1\n" % i for i in range(vmcfg.MAX_STATEMENTS + 1))
    assert "statements" in str(_error(stmts, LimitError))


def test_ten_megabyte_single_token_bounded_memory():
    data = b"name = '" + b"A" * (10 * 1024 * 1024) + b"'\n"
    tracemalloc.start()
    try:
        with pytest.raises(LimitError):
            vmcfg.parse(data)
        with pytest.raises(LimitError):
            vmcfg.read(BytesSource(data, "big.cfg"))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1024 * 1024


class _HugeSource(ByteSource):
    """Claims 4 GiB; any read of more than a page is a test failure."""

    name = "huge/vm.cfg"
    size = 4 * 1024 ** 3

    def read(self, offset: int, length: int) -> bytes:
        assert length <= 65536, "tried to read the whole claimed size"
        return b"memory = 1\n"[:length]


def test_huge_source_is_refused_without_reading():
    tracemalloc.start()
    try:
        with pytest.raises(LimitError) as info:
            vmcfg.inspect(_HugeSource())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert info.value.source == "huge/vm.cfg" and peak < 256 * 1024


# ---------------------------------------------------------------------------------------
# Detection and report


@pytest.mark.parametrize("path", CFGS, ids=lambda p: p.name)
def test_sniff_claims_vm_cfg_and_nothing_else_does(path: Path):
    head = path.read_bytes()
    assert vmcfg.sniff(head)
    for other in (vmx, vmsd, vmxf, vmtm, descriptor):
        assert not other.sniff(head), other.KIND


def test_sniff_rejects_vmware_text():
    vmx_text = (b'.encoding = "UTF-8"\nconfig.version = "8"\nvirtualHW.version = "19"\n'
                b'displayName = "db01"\nmemsize = "4096"\nnumvcpus = "2"\n')
    no_dots = b'displayName = "db01"\nmemsize = "4096"\nname = "x"\nmemory = "1"\nuuid.bios = "x"\n'
    for head in (vmx_text, no_dots, load("weblab.vmtm"), load("workstation.vmxf"),
                 sample("xo_esxi_4snap.vmsd").read_bytes(),
                 sample("libvmdk_descriptor_file.1").read_bytes(), b"", b"\0\0\0",
                 b"name = 'x'\n", b"hello world\nthis is prose = not config\n"):
        assert not vmcfg.sniff(head), head[:40]


def test_inspect_report():
    report = vmcfg.inspect(BytesSource(load("ovm3_pvm_vm.cfg"), "vm.cfg"))
    assert report.kind == "vmcfg"
    assert report.fields["name"] == "ol6-db01"
    assert report.fields["domain type"] == "xen_pvm"
    assert report.fields["memory (MiB)"] == 8192 and report.fields["disks"] == 3
    disks = report.tables[0]
    assert disks.rows[1] == ["xvdb", "phy", "w!", True, False, None, None,
                             "/dev/mapper/3600144f0d7a1b2c3000052f1e0c20007"]
    data = report.data
    assert data["vm"]["high_availability"] is True
    assert data["statements"][0] == {"name": "vif", "line": 1, "offset": 0,
                                     "value": ["mac=00:21:f6:00:00:1a,bridge=0a0a0a00,type=netfront",
                                               "mac=00:21:f6:00:00:1b,bridge=c0a80100,type=netfront"]}
    import json
    json.dumps(data)  # JSON-able


# ---------------------------------------------------------------------------------------
# Fuzzing

_scalars = (st.text(max_size=20) | st.integers(-10**30, 10**30) | st.booleans() | st.none()
            | st.floats(allow_nan=False, allow_infinity=False))
_keys = st.text(max_size=8) | st.integers(-1000, 1000) | st.booleans() | st.none()
_values = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=4)
                       | st.lists(inner, max_size=4).map(tuple)
                       | st.dictionaries(_keys, inner, max_size=4), max_leaves=20)


def _same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    if type(a) is not type(b):
        return False
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return a == b


@settings(max_examples=300, deadline=None)
@given(_values)
def test_reads_python_repr_and_own_writer(value):
    """Python's repr is an independent writer of the same literal syntax."""
    for text in (repr(value), vmcfg.format_value(value)):
        data = f"x = {text}\n".encode("utf-8", "surrogatepass")
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            continue  # lone surrogates: not text a file would hold
        cfg = vmcfg.parse(data)
        assert _same(cfg.get("x"), value), text
        assert cfg.dump() == data


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400))
def test_random_bytes_only_vmsift_errors(data: bytes):
    vmcfg.sniff(data)
    try:
        cfg = vmcfg.parse(data)
    except VmsiftError:
        return
    assert cfg.dump() == data
    cfg.to_dict()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(CFGS), st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)),
                                       min_size=1, max_size=8), st.integers(0, 10_000))
def test_mutated_files_only_vmsift_errors(path: Path, edits, cut: int):
    data = bytearray(path.read_bytes())
    for pos, byte in edits:
        data[pos % len(data)] = byte
    data = bytes(data[: max(1, cut % (len(data) + 1))])
    vmcfg.sniff(data)
    try:
        cfg = vmcfg.parse(data)
    except VmsiftError:
        return
    assert cfg.dump() == data
    report = vmcfg.inspect(BytesSource(data))
    assert report.kind == "vmcfg"


@pytest.mark.parametrize("statement", [b"import os\n", b"os.system('touch /tmp/x')\n",
                                       b"memory = __import__('os').getpid()\n"])
def test_vm_cfg_with_python_statements_says_they_are_never_run(tmp_path, statement):
    from .helpers import vmsift

    cfg = tmp_path / "vm.cfg"
    cfg.write_bytes(b"name = 'db01'\nmemory = 2048\n" + statement + b"vcpus = 2\n")
    out = vmsift("inspect", cfg)
    assert out.returncode == 3, out.stderr
    assert "line 3:" in out.stderr and "never run" in out.stderr
