"""VMware .vmxf: decoded values, kept bytes, refused DTDs / entities, limits, fuzzing."""

from __future__ import annotations

import json
import tracemalloc
import xml.etree.ElementTree as ET

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vmsift.errors import FormatError, LimitError, VmsiftError
from vmsift.formats import vmcfg, vmsd, vmtm, vmx, vmxf
from vmsift.formats.vmdk import descriptor
from vmsift.source import BytesSource

from .helpers import FIXTURES, sample

TEXT = FIXTURES / "text"
VMXFS = sorted(TEXT.glob("*.vmxf"))


def load(name: str) -> bytes:
    return (TEXT / name).read_bytes()


def test_workstation_values():
    f = vmxf.parse(load("workstation.vmxf"))
    assert f.vm_id == "52 b2 f3 ea b0 ea 8d 3a-22 be f1 52 b4 2e 9f 90"
    assert f.vmx_path == "Windows XP Professional.vmx"
    (vm,) = f.vms
    assert vm.to_dict() == {
        "vm_id": "52 b2 f3 ea b0 ea 8d 3a-22 be f1 52 b4 2e 9f 90",
        "vm_uuid": "52b2f3ea-b0ea-8d3a-22be-f152b42e9f90",
        "vmx_path": "Windows XP Professional.vmx",
        "client_metadata": {"attributes": {}, "history": []},
        "team": [], "other": []}
    assert [e["path"] for e in f.elements()] == [
        "Foundry", "Foundry/VM", "Foundry/VM/VMId", "Foundry/VM/ClientMetaData",
        "Foundry/VM/ClientMetaData/clientMetaDataAttributes",
        "Foundry/VM/ClientMetaData/HistoryEventList", "Foundry/VM/vmxPathName"]
    assert f.elements()[2]["attributes"] == {"type": "string"}
    assert f.warnings == []


def test_matches_elementtree_oracle():
    """The element listing agrees with the standard library's own XML reader."""
    for path in VMXFS:
        ours = [(e["path"].rsplit("/", 1)[-1], e["attributes"]) for e in
                vmxf.parse(path.read_bytes()).elements()]
        theirs = [(el.tag, el.attrib) for el in ET.fromstring(path.read_bytes()).iter()]
        assert ours == theirs


def test_two_entries_warned():
    f = vmxf.parse(load("two_entries.vmxf"))
    assert [v.vm_id for v in f.vms] == ["52 b2 f3 ea b0 ea 8d 3a-22 be f1 52 b4 2e 9f 90",
                                        "52 37 fd e4 a4 61 28 61-4f f2 9b e5 b8 9b 12 fd"]
    assert f.warnings == ["VM 1: a second VM entry with a different VMId"]


def test_team_membership_and_typed_values_listed():
    data = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Foundry>\n<VM>\n'
            b'<VMId type="string">52 00 11 22 33 44 55 66-77 88 99 aa bb cc dd ee</VMId>\n'
            b'<ClientMetaData>\n<clientMetaDataAttributes>\n'
            b'<lastPowerOn type="int">1199145600</lastPowerOn>'
            b'<favorite type="bool">TRUE</favorite></clientMetaDataAttributes>\n'
            b'<HistoryEventList><HistoryEvent type="string">created</HistoryEvent>'
            b'</HistoryEventList></ClientMetaData>\n'
            b'<VMTeamList><VMTeam><teamPathName type="string">..\\lab\\lab.vmtm</teamPathName>'
            b'</VMTeam></VMTeamList>\n'
            b'<vmxPathName type="string">caf\xc3\xa9 &amp; co.vmx</vmxPathName></VM></Foundry>')
    f = vmxf.parse(data)
    (vm,) = f.vms
    assert vm.vmx_path == "café & co.vmx"
    assert vm.client_metadata == {
        "attributes": {"lastPowerOn": 1199145600, "favorite": True},
        "history": [{"tag": "HistoryEvent", "attributes": {"type": "string"},
                     "text": "created", "value": "created"}]}
    (team,) = vm.team
    assert team["tag"] == "VMTeamList"
    leaf = team["children"][0]["children"][0]
    assert leaf["tag"] == "teamPathName" and leaf["value"] == "..\\lab\\lab.vmtm"
    assert f.dump() == data
    report = vmxf.inspect(BytesSource(data, "x.vmxf"))
    assert report.fields["team entries"] == 1
    json.dumps(report.data)


@pytest.mark.parametrize("path", VMXFS, ids=lambda p: p.name)
def test_dump_returns_original_bytes(path):
    data = path.read_bytes()
    for variant in (data, b"\xef\xbb\xbf" + data, data.replace(b"\n", b"\r\n")):
        assert vmxf.parse(variant).dump() == variant


def test_inspect_report():
    report = vmxf.inspect(BytesSource(load("workstation.vmxf"), "w.vmxf"))
    assert report.kind == "vmxf"
    assert report.fields == {"VM id": "52 b2 f3 ea b0 ea 8d 3a-22 be f1 52 b4 2e 9f 90",
                             "VM uuid": "52b2f3ea-b0ea-8d3a-22be-f152b42e9f90",
                             "vmx file": "Windows XP Professional.vmx", "VM entries": 1,
                             "team entries": 0}
    assert report.tables[0].rows[-1] == ["Foundry/VM/vmxPathName", "type=string",
                                         "Windows XP Professional.vmx"]


# ---------------------------------------------------------------------------------------
# Hostile XML

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<Foundry><VM><VMId type="string">&lol9;</VMId></VM></Foundry>
"""


def _xxe(path: str) -> bytes:
    return (b'<?xml version="1.0"?>\n<!DOCTYPE Foundry [ <!ENTITY xxe SYSTEM "file://'
            + path.encode() + b'"> ]>\n<Foundry><VM><vmxPathName>&xxe;</vmxPathName></VM>'
            b'</Foundry>\n')


def test_billion_laughs_refused_in_bounded_memory():
    tracemalloc.start()
    try:
        with pytest.raises(FormatError) as info:
            vmxf.parse(BILLION_LAUGHS, "bomb.vmxf")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "DOCTYPE" in str(info.value) and info.value.source == "bomb.vmxf"
    # refused inside the DOCTYPE line, before expat saw the first entity declaration
    assert BILLION_LAUGHS.index(b"<!DOCTYPE") <= info.value.offset < BILLION_LAUGHS.index(
        b"<!ENTITY")
    assert peak < 512 * 1024


def test_xxe_refused_and_file_not_read(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-CONTENT")
    for data in (_xxe(str(secret)),
                 b'<!DOCTYPE Foundry SYSTEM "file://' + str(secret).encode() + b'"><Foundry/>',
                 b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY % p SYSTEM "file://'
                 + str(secret).encode() + b'"> %p;]><Foundry/>'):
        with pytest.raises(FormatError) as info:
            vmxf.parse(data)
        assert "DOCTYPE" in str(info.value)
        assert "TOP-SECRET" not in str(info.value)


def test_undeclared_entity_refused():
    with pytest.raises(FormatError) as info:
        vmxf.parse(b"<Foundry><VM><VMId>&xxe;</VMId></VM></Foundry>")
    assert "undefined entity" in str(info.value) or "undeclared" in str(info.value)


def test_limits():
    deep = b"<Foundry>" + b"<a>" * 100_000 + b"</a>" * 100_000 + b"</Foundry>"
    with pytest.raises(LimitError, match="deeper"):
        vmxf.parse(deep)
    wide = b"<Foundry>" + b"<a/>" * (vmxf.MAX_ELEMENTS + 1) + b"</Foundry>"
    with pytest.raises(LimitError, match="elements"):
        vmxf.parse(wide)
    text = b"<Foundry><VM><VMId>" + b"A" * (2 * 1024 * 1024) + b"</VMId></VM></Foundry>"
    with pytest.raises(LimitError, match="longer"):
        vmxf.parse(text)
    big = b"<Foundry>" + b" " * (10 * 1024 * 1024) + b"</Foundry>"
    tracemalloc.start()
    try:
        with pytest.raises(LimitError):
            vmxf.read(BytesSource(big, "big.vmxf"))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 256 * 1024


@pytest.mark.parametrize("data, what", [
    (b"", "no element"),
    (b"<Foundry><VM></Foundry>", "mismatched tag"),
    (b"<Foundry><VM><VMId>x</VMId>", "no element found"),  # truncated
    (b"not xml at all", "syntax error"),
    (b"<Foundry/><Foundry/>", "junk after document element"),
    (b"<?xml version='1.0' encoding='x-unknown'?><Foundry/>", "encoding"),
])
def test_malformed(data, what):
    with pytest.raises(FormatError) as info:
        vmxf.parse(data, "bad.vmxf")
    assert what in str(info.value) and info.value.source == "bad.vmxf"
    assert info.value.offset is not None


# ---------------------------------------------------------------------------------------
# Detection


def test_sniff_variants():
    base = load("workstation.vmxf")
    body = base.split(b"?>", 1)[1]
    for head in (base, b"\xef\xbb\xbf" + base, b"\n\n  " + base, body.lstrip(),
                 b"<!-- made by hand -->\n" + body.lstrip(),
                 b"\xff\xfe" + base.decode().encode("utf-16-le"),
                 b"<Foundry>", base[:40]):
        assert vmxf.sniff(head), head[:30]
    for head in (b"", b"<html><body/></html>", b"<Foundryx/>",
                 b'<?xml version="1.0"?><Foundry><VMTeam><name>x</name></VMTeam></Foundry>',
                 load("weblab.vmtm"), load("ovm3_pvm_vm.cfg"), b"\0" * 100,
                 sample("xo_esxi_4snap.vmsd").read_bytes()):
        assert not vmxf.sniff(head), head[:30]
    for head in VMXFS:
        for other in (vmcfg, vmx, vmsd, vmtm, descriptor):
            assert not other.sniff(head.read_bytes()), other.KIND


# ---------------------------------------------------------------------------------------
# Fuzzing


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_random_bytes_only_vmsift_errors(data):
    vmxf.sniff(data)
    try:
        f = vmxf.parse(data)
    except VmsiftError:
        return
    assert f.dump() == data
    json.dumps(f.to_dict())


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(VMXFS), st.lists(st.tuples(st.integers(0, 2000), st.integers(0, 255)),
                                        min_size=1, max_size=6), st.integers(0, 2000))
def test_mutated_files_only_vmsift_errors(path, edits, cut):
    data = bytearray(path.read_bytes())
    for pos, byte in edits:
        data[pos % len(data)] = byte
    data = bytes(data[: cut % (len(data) + 1)])
    vmxf.sniff(data)
    try:
        report = vmxf.inspect(BytesSource(data))
    except VmsiftError:
        return
    json.dumps(report.data)
