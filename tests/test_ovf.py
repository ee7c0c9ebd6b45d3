"""OVF packages and OVAs: qemu-img disks packed by tar in the spec's order, read in place;
disks checked against `qemu-img convert` of the same file, manifests against sha256sum /
sha1sum, tar indexes against `tar -tv`; real public descriptors (Cisco's COT on PyPI, virt-v2v
in Debian); and hostile input: XML bombs, external entities, unsafe member names, members
past the end, missing manifest files, a gzip bomb."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import subprocess
import tarfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.fixtures import corpus, ova
from tests.helpers import require_tool, vmsift, vmsift_ok as ok

MIB = 1 << 20


def qemu_raw(vmdk: Path, out: Path) -> bytes:
    ova.run("qemu-img", "convert", "-f", "vmdk", "-O", "raw", vmdk, out)
    return out.read_bytes()


@pytest.fixture(scope="module")
def pkg(tmp_path_factory):
    require_tool("qemu-img")
    require_tool("tar")
    require_tool("sha256sum")
    return ova.build(tmp_path_factory.mktemp("ovf") / "vapp")


# --- the package as inspect sees it ----------------------------------------------------------


@pytest.mark.parametrize("which", ["ova", "ovf"])
def test_inspect_package(pkg, which):
    doc = json.loads(ok("inspect", "--json", pkg[which]).stdout)
    assert doc["kind"] == which and doc["detected_by"] == "content"
    data = doc["data"]
    assert data["ovf_version"] == "1.x" and data["collections"] == ["vapp"]
    systems = {s["id"]: s for s in data["systems"]}
    assert set(systems) == {"vm1", "vm2"}
    assert systems["vm1"]["disks"] == ["vmdisk1"] and systems["vm2"]["disks"] == ["vmdisk2"]
    assert systems["vm1"]["cpus"] == 2 and systems["vm2"]["memory"] == 2048 * MIB
    assert systems["vm1"]["collection"] == "vapp"
    kinds = [i["kind"] for i in systems["vm1"]["items"]]
    assert kinds == ["processor", "memory", "parallel SCSI HBA", "disk drive",
                     "ethernet adapter"]
    assert systems["vm1"]["products"][0]["properties"][0] == {
        "key": "hostname", "type": "string", "value": "vm1.local", "user_configurable": True,
        "label": "Host name"}
    assert systems["vm2"]["eulas"] == ["Use it well."]
    assert [n["name"] for n in data["networks"]] == ["VM Network"]
    for disk, raw, vmdk in zip(data["disks"], pkg["raws"], pkg["vmdks"]):
        info = json.loads(ova.run("qemu-img", "info", "--output=json", vmdk))
        assert disk["capacity"] == info["virtual-size"] == raw.stat().st_size
        assert disk["stored_size"] == vmdk.stat().st_size
        # data: what qemu-img map says is data, in whole 64 KiB grains
        runs = json.loads(ova.run("qemu-img", "map", "--output=json", vmdk))
        data_bytes = sum(r["length"] for r in runs if r["data"])
        assert disk["data"] == data_bytes
    assert data["manifest"]["descriptor"] == "ok" and data["manifest"]["missing"] == []
    assert doc["warnings"] == []


def test_inspect_text_names_everything(pkg):
    out = ok("inspect", pkg["ova"]).stdout
    for needle in ("OVA package", "virtual systems (2)", "hardware of vm1", "disk drive",
                   "VM Network", "descriptor ok, every file present", "properties of vm2"):
        assert needle in out, needle


# --- disks ----------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["ova", "ovf"])
def test_export_matches_qemu_img(pkg, which, tmp_path):
    for n, (vmdk, spec) in enumerate(zip(pkg["vmdks"], pkg["specs"]), 1):
        expected = qemu_raw(vmdk, tmp_path / f"q{n}.raw")
        for pick in ((str(n), spec.href) if which == "ova" else (spec.id,)):
            out = tmp_path / f"{which}-{n}-{pick}.raw"
            ok("disk", "export", pkg[which], "--disk", pick, out)
            assert out.read_bytes() == expected
            assert out.stat().st_blocks * 512 < len(expected) // 2  # sparse


def test_disk_info_and_map(pkg):
    info = json.loads(ok("disk", "info", "--json", pkg["ova"], "--disk", "2").stdout)
    assert info["data"]["capacity"] == pkg["raws"][1].stat().st_size
    assert info["data"]["chain"][0]["create_type"] == "streamOptimized"
    doc = json.loads(ok("disk", "map", "--json", pkg["ova"], "--disk", "vmdisk1").stdout)
    ours = [(r["offset"], r["length"]) for r in doc["runs"] if r["kind"] == "data"]
    theirs = [(r["start"], r["length"]) for r in json.loads(ova.run(
        "qemu-img", "map", "--output=json", pkg["vmdks"][0])) if r["data"]]
    assert ours == theirs
    several = vmsift("disk", "export", pkg["ova"], "/dev/null")
    assert several.returncode == 4 and "choose one with --disk" in several.stderr


def test_chunked_and_gzip_references(pkg, tmp_path):
    require_tool("split")
    require_tool("gzip")
    src, folder = pkg["vmdks"][0], tmp_path / "p"
    folder.mkdir()
    shutil.copy(src, folder / "disk1.vmdk")
    ova.run("split", "-b", str(MIB), "-d", "-a", "9", folder / "disk1.vmdk",
            folder / "disk1.vmdk.")
    (folder / "disk1.vmdk").unlink()
    (folder / "disk2.vmdk.gz").write_bytes(subprocess.run(
        ["gzip", "-c", str(pkg["vmdks"][1])], capture_output=True, check=True).stdout)
    specs = [ova.DiskSpec("vmdisk1", "disk1.vmdk", pkg["specs"][0].capacity,
                          src.stat().st_size, f'ovf:chunkSize="{MIB}"'),
             ova.DiskSpec("vmdisk2", "disk2.vmdk.gz", pkg["specs"][1].capacity,
                          (folder / "disk2.vmdk.gz").stat().st_size,
                          'ovf:compression="gzip"')]
    (folder / "p.ovf").write_text(ova.descriptor(specs, [("vm1", ["vmdisk1", "vmdisk2"])]))
    chunks = sorted(p.name for p in folder.glob("disk1.vmdk.0*"))
    assert len(chunks) == -(-src.stat().st_size // MIB) and chunks[0] == "disk1.vmdk.000000000"
    ova.write_manifest(folder, "p.mf", ["p.ovf", *chunks, "disk2.vmdk.gz"])
    ova.pack(folder, folder / "p.ova", ["p.ovf", "p.mf", *chunks, "disk2.vmdk.gz"])
    for package in (folder / "p.ovf", folder / "p.ova"):
        for n, vmdk in ((1, pkg["vmdks"][0]), (2, pkg["vmdks"][1])):
            out = tmp_path / f"{package.suffix}{n}.raw"
            ok("disk", "export", package, "--disk", str(n), out)
            assert out.read_bytes() == qemu_raw(vmdk, tmp_path / "q.raw")
        mapped = vmsift("disk", "map", package, "--disk", "2")
        assert mapped.returncode == 4 and "random access is impossible" in mapped.stderr
        doc = json.loads(ok("inspect", "--json", package).stdout)
        assert [d["chunks"] for d in doc["data"]["disks"]] == [len(chunks), None]
        assert [d["compression"] for d in doc["data"]["disks"]] == [None, "gzip"]
        assert ok("verify", package).stdout.count("OK") == len(chunks) + 2


# --- manifests and certificates -------------------------------------------------------------


@pytest.mark.parametrize("tool", ["sha256sum", "sha1sum"])
def test_verify_against_coreutils(tmp_path, tool):
    require_tool(tool)
    p = ova.build(tmp_path / "v", size=4 * MIB, disks=1, systems=1, tool=tool)
    expected = ova.digests(p["folder"], ["vapp.ovf", "disk1.vmdk"], tool)
    for package in (p["ova"], p["ovf"]):
        doc = json.loads(ok("verify", "--json", package).stdout)
        assert doc["ok"] is True
        assert {c["name"]: c["actual"] for c in doc["checks"]} == expected


def test_verify_mismatch_names_the_file_exit_8(pkg, tmp_path):
    bad = tmp_path / "bad.ova"
    shutil.copy(pkg["ova"], bad)
    with tarfile.open(bad) as t:
        member = t.getmember("disk2.vmdk")
    with open(bad, "r+b") as f:  # one byte inside the second disk's data
        f.seek(member.offset_data + member.size // 2)
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 0xFF]))
    out = vmsift("verify", bad)
    assert out.returncode == 8
    assert "disk2.vmdk (SHA256 mismatch)" in out.stderr and "disk1.vmdk" not in out.stderr
    assert "MISMATCH  SHA256  disk2.vmdk" in out.stdout and "OK        SHA256  disk1.vmdk" \
        in out.stdout


def test_manifest_names_a_missing_file(pkg, tmp_path):
    folder = tmp_path / "m"
    shutil.copytree(pkg["folder"], folder)
    with open(folder / "vapp.mf", "a") as f:
        f.write(f"SHA256(gone.iso)= {'0' * 64}\n")
    out = vmsift("verify", folder / "vapp.ovf")
    assert out.returncode == 8 and "gone.iso (SHA256 missing)" in out.stderr
    insp = ok("inspect", folder / "vapp.ovf")
    assert "gone.iso: named in the manifest, not in the package" in insp.stderr
    escape = folder / "vapp.mf"
    escape.write_text(f"SHA256(../../etc/passwd)= {'0' * 64}\n")
    out = vmsift("verify", folder / "vapp.ovf")
    assert out.returncode == 8 and "../../etc/passwd (SHA256 missing)" in out.stderr


def test_signed_manifest(tmp_path):
    require_tool("openssl")
    p = ova.build(tmp_path / "s", size=4 * MIB, disks=1, systems=1)
    folder = p["folder"]
    ova.run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
            folder / "key.pem", "-out", folder / "cert.pem", "-days", "2", "-subj",
            "/CN=vmsift test signer")
    sig = ova.run("openssl", "dgst", "-sha256", "-sign", folder / "key.pem", "-hex",
                  folder / "vapp.mf").split("= ")[-1].strip()
    (folder / "vapp.cert").write_text(f"SHA256(vapp.mf)= {sig}\n"
                                      + (folder / "cert.pem").read_text())
    doc = json.loads(ok("verify", "--json", p["ovf"]).stdout)
    assert doc["certificate"]["signature"] == "valid"
    assert doc["certificate"]["subject"] == "CN=vmsift test signer"
    insp = json.loads(ok("inspect", "--json", p["ovf"]).stdout)
    assert insp["data"]["certificate"]["algorithm"] == "SHA256"
    mf = (folder / "vapp.mf").read_text()
    (folder / "vapp.mf").write_text(mf + "\n")  # one byte more: the signature no longer fits
    out = vmsift("verify", p["ovf"])
    assert out.returncode == 8 and "signature of the manifest does not verify" in out.stderr


# --- datastores, Oracle VM repositories, backups ---------------------------------------------


def test_oracle_vm_repository_assemblies_and_templates(pkg, tmp_path):
    repo = tmp_path / "repo"
    (repo / "Assemblies" / "0004fb00000a0001").mkdir(parents=True)
    (repo / "Templates" / "0004fb0000140001").mkdir(parents=True)
    (repo / "VirtualDisks").mkdir()
    (repo / ".ovsrepo").write_text("OVS_REPO_UUID=0004fb0000030000aaaa\n")
    shutil.copy(pkg["ova"], repo / "Assemblies" / "0004fb00000a0001" / "package.ova")
    ova.run("qemu-img", "create", "-q", "-f", "raw", repo / "VirtualDisks" / "t.img", "8M")
    (repo / "Templates" / "0004fb0000140001" / "vm.cfg").write_text(
        "name = '0004fb0000140001'\nOVM_simple_name = 'ol7-template'\n"
        "disk = ['file:/OVS/Repositories/0004fb0000030000aaaa/VirtualDisks/t.img,xvda,w']\n")
    doc = json.loads(ok("ds", "vms", "--json", repo).stdout)
    vms = {vm["name"]: vm for vm in doc["vms"]}
    assert set(vms) == {"vm1", "vm2", "ol7-template"}
    assert vms["ol7-template"]["template"] is True and vms["vm1"]["template"] is False
    assert vms["vm1"]["package"]["assembly"] is True and vms["vm1"]["kind"] == "ovf"
    assert vms["vm2"]["disks"][0]["capacity"] == pkg["raws"][1].stat().st_size
    assert vms["vm2"]["disks"][0]["problem"] is None
    text = ok("ds", "vms", repo).stdout
    assert "template" in text and "assembly" in text


def test_backup_an_ova_restores_each_vm(pkg, tmp_path, monkeypatch):
    monkeypatch.setenv("VMSIFT_CACHE_DIR", str(tmp_path / "cache"))
    repo = tmp_path / "repo"
    ok("init", "-r", repo, "--encryption", "none")
    out = ok("backup", "--json", "-r", repo, pkg["ova"]).stdout
    snaps = [json.loads(line) for line in out.splitlines()]
    made = [e for e in snaps if e["event"] == "snapshot"]
    assert sorted(e["vm"] for e in made) == ["vm1", "vm2"]
    for n, name in enumerate(["vm1", "vm2"]):
        target = tmp_path / name
        ok("restore", "-r", repo, f"latest:{name}", "--target", target)
        raw = target / f"disk{n + 1}.raw"
        assert raw.read_bytes() == qemu_raw(pkg["vmdks"][n], tmp_path / "q.raw")
        assert (target / "vapp.ovf").read_bytes() == pkg["ovf"].read_bytes()
    assert hashlib.sha256(pkg["ova"].read_bytes()).hexdigest() == ova.digests(
        pkg["folder"], ["vapp.ova"])["vapp.ova"]  # the evidence as it was packed


def test_backup_skips_a_compressed_disk_exit_10(pkg, tmp_path, monkeypatch):
    monkeypatch.setenv("VMSIFT_CACHE_DIR", str(tmp_path / "cache"))
    folder = tmp_path / "g"
    folder.mkdir()
    shutil.copy(pkg["vmdks"][0], folder / "disk1.vmdk")
    (folder / "disk2.vmdk.gz").write_bytes(gzip.compress(pkg["vmdks"][1].read_bytes(), 1))
    specs = [ova.DiskSpec("vmdisk1", "disk1.vmdk", pkg["specs"][0].capacity,
                          pkg["specs"][0].size),
             ova.DiskSpec("vmdisk2", "disk2.vmdk.gz", pkg["specs"][1].capacity,
                          (folder / "disk2.vmdk.gz").stat().st_size, 'ovf:compression="gzip"')]
    (folder / "g.ovf").write_text(ova.descriptor(specs, [("vm1", ["vmdisk1", "vmdisk2"])]))
    repo = tmp_path / "repo"
    ok("init", "-r", repo, "--encryption", "none")
    out = vmsift("backup", "-r", repo, folder / "g.ovf")
    assert out.returncode == 10 and "random access is impossible" in out.stderr
    ok("restore", "-r", repo, "latest", "--disk", "disk1.vmdk", "--target", tmp_path / "r")
    assert (tmp_path / "r" / "disk1.raw").read_bytes() == qemu_raw(pkg["vmdks"][0],
                                                                   tmp_path / "q.raw")


def test_ova_as_a_datastore(pkg, tmp_path):
    """`ds` reads an OVA as a volume: listing, cat and extract agree with GNU tar."""
    require_tool("tar")
    listing = ova.run("tar", "--numeric-owner", "-tvf", pkg["ova"]).splitlines()
    theirs = {line.split(None, 5)[5]: int(line.split()[2]) for line in listing}
    doc = json.loads(ok("ds", "ls", "--json", pkg["ova"]).stdout)
    assert {e["name"]: e["stat"]["size"] for e in doc["entries"]} == theirs
    ova.run("tar", "-xf", pkg["ova"], "-C", tmp_path)
    assert ok("ds", "cat", pkg["ova"], "vapp.mf").stdout == (tmp_path / "vapp.mf").read_text()
    ok("ds", "extract", pkg["ova"], "disk2.vmdk", tmp_path / "out")
    assert (tmp_path / "out" / "disk2.vmdk").read_bytes() == (tmp_path / "disk2.vmdk").read_bytes()
    vms = json.loads(ok("ds", "vms", "--json", pkg["ova"]).stdout)["vms"]
    assert sorted(vm["name"] for vm in vms) == ["vm1", "vm2"]


# --- the tar index --------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["ustar", "pax", "gnu"])
def test_tar_index_matches_tar(tmp_path, fmt):
    from vmsift.datastore.archive import TarVolume
    from vmsift.source import FileSource

    folder = tmp_path / "t"
    deep = folder / ("d" * 60) / ("e" * 60)  # over 100 characters: ustar's prefix field
    deep.mkdir(parents=True)
    (deep / ("long-name-" * 5 + ".vmdk")).write_bytes(b"x" * 1000)
    (folder / "a.ovf").write_text("<Envelope/>")
    (folder / "empty").write_bytes(b"")
    names = ["a.ovf", "empty", str(deep.relative_to(folder))]
    ova.run("tar", f"--format={fmt}", "-C", folder, "-cf", tmp_path / "x.tar", *names)
    listing = ova.run("tar", "--numeric-owner", "-tvf", tmp_path / "x.tar").splitlines()
    theirs = {line.split(None, 5)[5].rstrip("/"): int(line.split()[2]) for line in listing}
    with TarVolume(FileSource(tmp_path / "x.tar")) as vol:
        ours = {m.name: m.size for m in vol.index.members}
        assert ours == theirs
        (long,) = [n for n in ours if n.endswith(".vmdk")]
        with vol.open(long) as src:
            assert src.read(0, 2000) == b"x" * 1000


# --- real public descriptors ----------------------------------------------------------------

DESCRIPTORS = [p for p in corpus.corpus_files("ovf") if p.values[0].filename.endswith(".ovf")]


def _oracle(data: bytes) -> dict:
    """Counts by the standard library's parser with explicit namespaces (no local-name
    matching): disks, files, systems, hardware items."""
    root = ET.fromstring(data)
    ns = root.tag[1:].split("}")[0]
    q = lambda name: f"{{{ns}}}{name}"  # noqa: E731
    sections = [el for el in root.iter() if el.tag == q("Section")]  # OVF 0.9
    disks = [el for el in root.iter(q("Disk"))]
    systems = [el for el in root.iter(q("VirtualSystem"))] + [
        el for el in root.iter(q("Content")) if "VirtualSystem" in str(el.attrib)]
    items = [el for el in root.iter() if el.tag.rsplit("}", 1)[-1] in
             ("Item", "StorageItem", "EthernetPortItem")]
    return {"disks": len(disks), "files": len(list(root.iter(q("File")))),
            "systems": len(systems), "items": len(items), "sections": len(sections),
            "capacities": [(el.get(q("capacity")), el.get(q("capacityAllocationUnits")))
                           for el in disks]}


UNITS = {None: 1, "byte": 1, "byte * 2^30": 1 << 30, "byte * 2^20": 1 << 20}  # the ones these files use


@pytest.mark.parametrize("item", DESCRIPTORS)
def test_public_descriptors(item, cache_dir):
    from vmsift.formats import ovf

    path = corpus.require(item, cache_dir)
    data = path.read_bytes()
    env = ovf.parse(data, str(path))
    expected = _oracle(data)
    assert len(env.disks) == expected["disks"] and len(env.files) == expected["files"]
    assert len(env.systems) == expected["systems"] >= 1
    assert sum(len(s.items) for s in env.systems) == expected["items"]
    for disk, (text, units) in zip(env.disks, expected["capacities"]):
        assert disk.capacity_text == text
        assert disk.capacity == int(text) * UNITS[units]
    assert [str(w) for w in env.warnings] == []
    # the whole CLI path: a descriptor alone is inspected, its missing disks are warnings
    doc = json.loads(ok("inspect", "--json", path).stdout)
    assert doc["kind"] == "ovf" and len(doc["data"]["systems"]) == expected["systems"]


def test_public_facts(cache_dir):
    """What the files say, checked by hand against their text."""
    from vmsift.formats import ovf

    def load(name: str) -> ovf.Envelope:
        (item,) = [i for i in corpus.corpus_items("ovf") if i.name == name]
        return ovf.parse(corpus.require(item, cache_dir).read_bytes())

    vmw = load("cot/vmware.ovf")
    assert vmw.disks[0].capacity == 1 << 30 and vmw.disks[0].populated_size == 293011456
    assert vmw.systems[0].os_type == "rhel6_64Guest"
    old = load("cot/v0.9.ovf")
    assert old.version == "0.9" and old.systems[0].memory == 8192 * MIB
    assert old.systems[0].eulas[0].startswith("Licensing text, oh licensing text!")
    two = load("virt-v2v/test-i-ova-two-disks.ovf")
    assert [d.capacity for d in two.disks] == [50 << 30, 450 << 30]
    assert two.systems[0].disk_ids() == ["vmdisk1", "vmdisk2"]
    gz = load("virt-v2v/test-i-ova-gz.ovf")
    assert gz.files[0].compression == "gzip" and gz.files[0].href == "disk1.vmdk.gz"
    v2 = load("cot/ubuntu.2.0.ovf")
    assert v2.version == "2.x" and v2.disks[0].capacity == 8 << 30
    (mf_item,) = [i for i in corpus.corpus_items("ovf") if i.name == "cot/ubuntu.2.0.mf"]
    mf = ovf.parse_manifest(corpus.require(mf_item, cache_dir).read_bytes())
    (desc_item,) = [i for i in corpus.corpus_items("ovf") if i.name == "cot/ubuntu.2.0.ovf"]
    digest = {e.name: e.hexdigest for e in mf.entries}["ubuntu.2.0.ovf"]
    assert digest == hashlib.sha256(corpus.require(desc_item, cache_dir).read_bytes()).hexdigest()


# --- hostile input --------------------------------------------------------------------------

BOMB = """<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
<!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">]>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1"><References>&lol4;</References></Envelope>
"""
EXTERNAL = """<?xml version="1.0"?>
<!DOCTYPE e [<!ENTITY x SYSTEM "file:///etc/passwd">]>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1"><References>&x;</References></Envelope>
"""


@pytest.mark.parametrize("text", [BOMB, EXTERNAL], ids=["billion-laughs", "external-entity"])
def test_hostile_xml_refused(tmp_path, text):
    path = tmp_path / "evil.ovf"
    path.write_text(text)
    out = vmsift("inspect", path)
    assert out.returncode == 3 and "hostile XML refused" in out.stderr
    assert "root:" not in out.stdout + out.stderr and "Traceback" not in out.stderr
    (tmp_path / "evil.ova").write_bytes(_tar([("evil.ovf", text.encode())]))
    out = vmsift("inspect", tmp_path / "evil.ova")
    assert out.returncode == 3 and "hostile XML refused" in out.stderr


def _tar(members: list[tuple[str, bytes]], fmt=tarfile.USTAR_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as t:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.mark.parametrize("name", ["../evil.vmdk", "/etc/evil.vmdk", "a/../../evil.vmdk"])
def test_unsafe_member_names_refused(pkg, tmp_path, name):
    descriptor = pkg["ovf"].read_bytes()
    data = _tar([("vapp.ovf", descriptor), (name, b"x" * 600)])
    (tmp_path / "x.ova").write_bytes(data)
    second = 512 + -(-len(descriptor) // 512) * 512
    for cmd in (("inspect",), ("verify",), ("disk", "info")):
        out = vmsift(*cmd, tmp_path / "x.ova")
        assert out.returncode == 3, (cmd, out.stderr)
        assert f"member name {name!r}" in out.stderr and "refused" in out.stderr
        assert f"@ {second:#x}" in out.stderr  # the offset of the second header


def test_member_larger_than_the_archive(pkg, tmp_path):
    """A cut archive: the best partial answer (warnings) from inspect; verify names the file
    cut short and the one missing (exit 8); reading the cut disk fails at the end."""
    cut = tmp_path / "cut.ova"
    data = pkg["ova"].read_bytes()
    with tarfile.open(pkg["ova"]) as t:
        second = t.getmember("disk2.vmdk")
    cut.write_bytes(data[:second.offset_data - 4096])  # inside the first disk's data
    out = ok("inspect", cut)
    assert "member 'disk1.vmdk'" in out.stderr and "runs past the end" in out.stderr
    assert "disk2.vmdk: named in the manifest, not in the package" in out.stderr
    out = vmsift("verify", cut)
    assert out.returncode == 8
    assert "disk1.vmdk (SHA256 unreadable" in out.stderr and "disk2.vmdk (SHA256 missing)" \
        in out.stderr and "OK        SHA256  vapp.ovf" in out.stdout
    out = vmsift("disk", "export", cut, "--disk", "1", tmp_path / "o.raw")
    assert out.returncode == 3 and "Traceback" not in out.stderr
    assert not (tmp_path / "o.raw").exists()
    # a header that claims more than the file holds, checksum fixed up
    forged = bytearray(_tar([("vapp.ovf", pkg["ovf"].read_bytes())]))
    forged[124:136] = b"%011o\x00" % (1 << 32)
    forged[148:156] = b" " * 8
    forged[148:156] = b"%06o\x00 " % sum(forged[:512])
    (tmp_path / "forged.ova").write_bytes(bytes(forged))
    for cmd in ("verify", "inspect"):  # the descriptor claims 4 GiB: refused, not read
        out = vmsift(cmd, tmp_path / "forged.ova")
        assert out.returncode == 3 and "forged.ova/vapp.ovf: OVF descriptor is 4294967296 " \
            "bytes, more than the 16777216 allowed" in out.stderr
    forged[0] ^= 1  # now the checksum does not match either: still read as a tar, refused
    (tmp_path / "forged.ova").write_bytes(bytes(forged))
    out = vmsift("verify", tmp_path / "forged.ova")
    assert out.returncode == 3 and "checksum does not match" in out.stderr


def test_gzip_bomb_in_a_compressed_reference(pkg, tmp_path):
    """256 MiB of inflated bytes from a 256 KiB file: stopped at the first bad marker, not
    inflated whole; and a stream that is no streamOptimized VMDK is refused after its first sector."""
    from vmsift.datastore.ovf import GZIP_SLACK, StreamedDisk
    from vmsift.errors import FormatError
    from vmsift.source import BytesSource

    header = pkg["vmdks"][0].read_bytes()[:512]
    bomb = io.BytesIO()
    with gzip.GzipFile(fileobj=bomb, mode="wb", compresslevel=9) as g:
        g.write(header[:512] + b"\x01" * (512 * 127))  # header, then junk where grains go
        block = b"\x01" * MIB
        for _ in range(256):
            g.write(block)
    raw = bomb.getvalue()
    assert len(raw) < MIB // 2
    disk = StreamedDisk(BytesSource(raw, "bomb.vmdk.gz"), "bomb", 16 * MIB)
    start = time.monotonic()
    with pytest.raises(FormatError, match="grain marker claims|inflates past|outside"):
        for _ in disk.grains():
            pass
    assert time.monotonic() - start < 5
    assert disk.size == 16 * MIB
    # the CLI: a package whose compressed disk inflates to zeros only, and one to junk
    folder = tmp_path / "b"
    folder.mkdir()
    zeros = io.BytesIO()
    with gzip.GzipFile(fileobj=zeros, mode="wb") as g:
        for _ in range(256):
            g.write(bytes(MIB))
    (folder / "d.vmdk.gz").write_bytes(zeros.getvalue())
    spec = ova.DiskSpec("vmdisk1", "d.vmdk.gz", 16 * MIB, len(zeros.getvalue()),
                        'ovf:compression="gzip"')
    (folder / "b.ovf").write_text(ova.descriptor([spec], [("vm1", ["vmdisk1"])]))
    out = vmsift("disk", "export", folder / "b.ovf", tmp_path / "o.raw")
    assert out.returncode == 3 and "bad magic" in out.stderr
    assert not (tmp_path / "o.raw").exists()
    assert GZIP_SLACK < 1 << 30


# --- fuzzing --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_ova(tmp_path_factory) -> bytes:
    require_tool("qemu-img")
    p = ova.build(tmp_path_factory.mktemp("fuzz") / "f", size=1 * MIB, disks=1, systems=1)
    return p["ova"].read_bytes()


def test_mutated_ovas_fail_cleanly(small_ova):
    """Damaged OVAs (headers, descriptor, manifest, disk): only vmsift errors escape, from
    inspect, verify and a full read of the disk."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from tests.helpers import mutate
    from vmsift.datastore.ovf import open_ova, open_package_disk
    from vmsift.datastore.ovf_check import verify
    from vmsift.errors import VmsiftError
    from vmsift.inspect import inspect_source
    from vmsift.source import BytesSource

    @settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.data())
    def run(data):
        raw = mutate(data, small_ova, hot=8192)
        try:
            inspect_source(BytesSource(raw, "fuzz.ova"))
        except VmsiftError:
            pass
        try:
            with open_ova(BytesSource(raw, "fuzz.ova"), "fuzz.ova") as pkg:
                verify(pkg)
                for disk in pkg.envelope.disks:
                    with open_package_disk(pkg, disk) as d:
                        for run_ in d.extents():
                            d.read(run_.offset, min(run_.length, 4 * MIB))
        except VmsiftError:
            pass

    run()
