"""VMware Workstation team files (.vmtm): members, LAN segments, round trip, detection.

No public .vmtm sample was found; ``weblab.vmtm`` is written for the project in the
dictionary syntax the team file is expected to use (see docs/formats/vmtm.md).
"""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vmsift.errors import FormatError, LimitError, VmsiftError
from vmsift.formats import vmcfg, vmsd, vmtm, vmx, vmxf
from vmsift.formats.vmdk import descriptor
from vmsift.source import BytesSource

from .helpers import FIXTURES, sample

TEXT = FIXTURES / "text"
WEBLAB = TEXT / "weblab.vmtm"

XML_TEAM = (b'<?xml version="1.0"?>\n<Foundry>\n<VMTeam>\n'
            b'<name type="string">Mail lab</name>\n<VMList>\n'
            b'<VM><VMId type="string">52 00 00 00 00 00 00 01-00 00 00 00 00 00 00 01</VMId>'
            b'<vmxPathName type="string">mx/mx.vmx</vmxPathName>'
            b'<powerOnDelay type="int">5</powerOnDelay></VM>\n'
            b'<VM><VMId type="string">52 00 00 00 00 00 00 02-00 00 00 00 00 00 00 02</VMId>'
            b'<vmxPathName type="string">client/client.vmx</vmxPathName>'
            b'<powerOnDelay type="int">0</powerOnDelay></VM>\n</VMList>\n'
            b'<lanSegmentList><lanSegment><name type="string">dmz</name>'
            b'<bandwidth type="string">unlimited</bandwidth></lanSegment></lanSegmentList>\n'
            b'</VMTeam>\n</Foundry>\n')


def test_dictionary_team_values():
    team = vmtm.parse(WEBLAB.read_bytes(), "weblab.vmtm")
    assert team.syntax == "dictionary" and team.name == "Web lab"
    members = [m.to_dict() for m in team.members]
    assert [(m["index"], m["name"], m["vmx_path"], m["power_on_order"], m["power_on_delay"])
            for m in members] == [
        (0, "Database", "..\\Database\\Database.vmx", 0, 30),
        (1, "App server", "..\\App server\\App server.vmx", 1, 10),
        (2, "Client", "..\\Client\\Client.vmx", 2, 0)]
    assert [(s.index, s.name, s.options["bandwidth"], s.options["packetLoss"])
            for s in team.lan_segments] == [(0, "Backend", "T1 (1.544 Mbps)", "0.0"),
                                            (1, "Front", "unlimited", "0.5")]
    assert team.to_dict()["power_on_sequence"] == [0, 1, 2]
    assert team.entries()["numVMs"] == "3"
    assert team.warnings == []


def test_power_on_sequence_follows_order_not_index():
    data = (b'vmteam.name = "t"\nvmteam.vm0.vmxPath = "a.vmx"\nvmteam.vm0.powerOnOrder = "2"\n'
            b'vmteam.vm1.vmxPath = "b.vmx"\nvmteam.vm1.powerOnOrder = "0"\n'
            b'vmteam.vm2.vmxPath = "c.vmx"\n')
    assert vmtm.parse(data).to_dict()["power_on_sequence"] == [1, 0, 2]


def test_xml_team_values():
    team = vmtm.parse(XML_TEAM)
    assert team.syntax == "xml" and team.name == "Mail lab"
    assert [(m.vmx_path, m.delay) for m in team.members] == [("mx/mx.vmx", 5),
                                                             ("client/client.vmx", 0)]
    assert [(s.name, s.options["bandwidth"]) for s in team.lan_segments] == [("dmz", "unlimited")]
    assert team.dump() == XML_TEAM
    with pytest.raises(ValueError):
        team.set("vmteam.name", "x")


def test_round_trip_and_set():
    data = WEBLAB.read_bytes()
    for variant in (data, data.replace(b"\n", b"\r\n"), b"\xef\xbb\xbf" + data,
                    b"# team\n\n" + data.rstrip(b"\n")):
        assert vmtm.parse(variant).dump() == variant
    team = vmtm.parse(data)
    team.set("vmteam.vm1.powerOnDelay", "45")
    out = team.dump()
    changed = [(a, b) for a, b in zip(data.split(b"\n"), out.split(b"\n")) if a != b]
    assert changed == [(b'vmteam.vm1.powerOnDelay = "10"', b'vmteam.vm1.powerOnDelay = "45"')]
    assert vmtm.parse(out).members[1].delay == 45


def test_inspect_report():
    report = vmtm.inspect(BytesSource(WEBLAB.read_bytes(), "weblab.vmtm"))
    assert report.kind == "vmtm"
    assert report.fields == {"team": "Web lab", "syntax": "dictionary", "members": 3,
                             "LAN segments": 2}
    assert report.tables[0].rows[1] == [1, "App server", "..\\App server\\App server.vmx", 1, 10]
    assert report.data["layout_verified"] is False
    assert report.data["dictionary"]["encoding"] == "windows-1252"
    json.dumps(report.data)


def test_sniff_is_exclusive():
    for head in (WEBLAB.read_bytes(), XML_TEAM, b'vmteam.name = "x"\n'):
        assert vmtm.sniff(head)
        for other in (vmx, vmsd, vmxf, vmcfg, descriptor):
            assert not other.sniff(head), other.KIND
    vmx_text = (b'.encoding = "UTF-8"\nconfig.version = "8"\nvirtualHW.version = "7"\n'
                b'displayName = "db"\nmemsize = "512"\nscsi0:0.fileName = "db.vmdk"\n')
    for head in (vmx_text, sample("xo_esxi_4snap.vmsd").read_bytes(),
                 sample("libvmdk_descriptor_file.1").read_bytes(),
                 (TEXT / "workstation.vmxf").read_bytes(), (TEXT / "ovm3_pvm_vm.cfg").read_bytes(),
                 vmx_text + b'vmteam.name = "x"\n', b"", b"<Foundry>"):
        assert not vmtm.sniff(head), head[:30]


def test_hostile_input():
    with pytest.raises(LimitError):
        vmtm.parse(b'vmteam.name = "' + b"A" * (10 * 1024 * 1024) + b'"\n')
    bomb = b'<!DOCTYPE x [<!ENTITY a "aaaa">]><Foundry><VMTeam>&a;</VMTeam></Foundry>'
    with pytest.raises(FormatError, match="DOCTYPE"):
        vmtm.parse(bomb)
    team = vmtm.parse(b'vmteam.vm99999999999.vmxPath = "x.vmx"\n')
    assert team.members == [] and any("ignored" in w for w in team.warnings)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from([WEBLAB.read_bytes(), XML_TEAM]),
       st.lists(st.tuples(st.integers(0, 2000), st.integers(0, 255)), min_size=1, max_size=6),
       st.integers(0, 2000))
def test_mutated_files_only_vmsift_errors(data, edits, cut):
    data = bytearray(data)
    for pos, byte in edits:
        data[pos % len(data)] = byte
    data = bytes(data[: cut % (len(data) + 1)])
    vmtm.sniff(data)
    try:
        team = vmtm.parse(data)
    except VmsiftError:
        return
    if team.syntax == "dictionary":
        assert team.dump() == data
    json.dumps(vmtm.inspect(BytesSource(data)).data)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_only_vmsift_errors(data):
    vmtm.sniff(data)
    try:
        vmtm.parse(data).to_dict()
    except VmsiftError:
        pass
