"""`vmsift memory extract`: guest physical memory written out of .vmsn / .vmss (+ .vmem).

Files come from tests/fixtures/vmsn_writer.py. Oracles: Volatility 3's VMware layer reading the
same checkpoint + .vmem (every page it maps must be byte-identical in the written image), and
the library's own `physical_view`.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from tests.fixtures import vmsn_writer as w
from tests.helpers import data_runs, volatility_vmware_layer, vmsift
from vmsift.errors import FormatError, LimitError, TruncatedError
from vmsift.forensics.memory import extract_memory, find_vmem, open_guest_memory
from vmsift.source import BytesSource, FileSource

PAGE = 4096
GIB = 1 << 30
CHUNK = 16 << 20


@pytest.fixture(scope="session")
def files(cache_dir) -> dict[str, Path]:
    d = cache_dir / "forensics-memory"
    d.mkdir(exist_ok=True)
    return {"vmsn": w.write_vmsn(d / "lab-Snapshot1.vmsn"),
            "vmem": w.write_vmem(d / "lab-Snapshot1.vmem"),
            "vmss": w.write_vmss(d / "suspended.vmss"),
            "vmss_sep": w.write_vmss(d / "separate.vmss", embed_memory=False)}


def assert_matches_volatility(raw: Path, vmem: Path, meta: Path) -> int:
    """Every byte the Volatility layer maps equals the image at that guest address; the
    image is zero elsewhere (checked through its holes). Returns the bytes compared."""
    oracle = volatility_vmware_layer(vmem, meta)
    assert os.path.getsize(raw) == oracle.maximum_address + 1
    compared = 0
    mapped = []
    with open(raw, "rb") as fh:
        for offset, length, _, _, _ in oracle.mapping(0, oracle.maximum_address + 1,
                                                     ignore_errors=True):
            mapped.append((offset, offset + length))
            for pos in range(offset, offset + length, CHUNK):
                n = min(CHUNK, offset + length - pos)
                fh.seek(pos)
                assert fh.read(n) == oracle.read(pos, n), hex(pos)
                compared += n
    for start, length in data_runs(raw):  # written data lies only where the layer maps
        assert any(a <= start and start + length <= b for a, b in mapped), hex(start)
    return compared


def test_vmsn_with_vmem_beside_it(files, tmp_path):
    assert find_vmem(str(files["vmsn"])) == str(files["vmem"])
    out = tmp_path / "guest.raw"
    result = extract_memory(str(files["vmsn"]), str(out))
    assert result.warnings == []
    assert result.size == 4 * GIB + 128 * 2**20 == os.path.getsize(out)
    assert assert_matches_volatility(out, files["vmem"], files["vmsn"]) == 1152 << 20
    with open(out, "rb") as fh:
        for ppn in w.marked_pages():
            fh.seek(ppn * PAGE)
            assert fh.read(32) == w.page_marker(ppn)
    # sparse: the 3 GiB gap and the zero pages are holes, only marked pages hold data
    runs = data_runs(out)
    assert sum(n for _, n in runs) < 64 * 65536
    assert not any(GIB <= a < 4 * GIB for a, _ in runs)
    # embedded files beside OUT, byte for byte
    assert result.files == {"config": f"{out}.vmx", "nvram": f"{out}.nvram",
                            "screenshot": f"{out}.png"}
    assert Path(f"{out}.vmx").read_bytes() == w.vmx_text()
    assert Path(f"{out}.png").read_bytes() == w.png(16, 12)
    assert Path(f"{out}.nvram").read_bytes() == bytes((i * 7) & 0xFF for i in range(8192))


def test_embedded_memory_matches_the_separate_pair(files, tmp_path):
    """A .vmss holding its RAM: Volatility reads only separate .vmem files, so the oracle is
    the same RAM as .vmss + .vmem pair."""
    out = tmp_path / "suspend.raw"
    result = extract_memory(str(files["vmss"]), str(out))
    assert result.files == {} and result.warnings == []
    assert assert_matches_volatility(out, files["vmem"], files["vmss_sep"]) == 1152 << 20
    with FileSource(files["vmss"]) as src:  # and the library's own view
        phys = open_guest_memory(src).physical
        with open(out, "rb") as fh:
            for addr in (0, GIB - PAGE, 4 * GIB, phys.size - PAGE, 0x12345 * PAGE):
                fh.seek(addr)
                assert fh.read(PAGE) == phys.read(addr, PAGE)


def test_separate_memory_needs_its_vmem(files, tmp_path):
    lone = tmp_path / "lone.vmss"
    shutil.copy(files["vmss_sep"], lone)
    with pytest.raises(FormatError, match=r"separate \.vmem.*--vmem"):
        extract_memory(str(lone), str(tmp_path / "x.raw"))
    assert not (tmp_path / "x.raw").exists()
    out = tmp_path / "given.raw"
    extract_memory(str(lone), str(out), vmem=str(files["vmem"]))
    assert assert_matches_volatility(out, files["vmem"], files["vmss_sep"]) == 1152 << 20


def test_truncated_vmem_warns_with_the_missing_range(files, tmp_path):
    short = tmp_path / "cut.vmem"
    with open(files["vmem"], "rb") as src, open(short, "wb") as dst:
        dst.write(src.read(GIB + 4 * 2**20))  # region 1 (guest 4 GiB+) keeps only 4 MiB
    out = tmp_path / "cut.raw"
    result = extract_memory(str(files["vmsn"]), str(out), vmem=str(short))
    assert [str(p) for p in result.warnings] == [
        f"{short} @ {GIB + 4 * 2**20:#x}: memory image ends at {GIB + 4 * 2**20:#x}: guest "
        f"physical {4 * GIB + 4 * 2**20:#x}-{4 * GIB + 128 * 2**20:#x} is missing "
        "(written as zeros)"]
    assert os.path.getsize(out) == 4 * GIB + 128 * 2**20
    with open(out, "rb") as fh:
        fh.seek(4 * GIB)
        assert fh.read(32) == w.page_marker(0x100000)
        fh.seek(4 * GIB + 64 * 2**20)
        assert fh.read(32) == bytes(32)  # the marker there is lost with the cut


def absurd_checkpoint(path: Path, ppn: int) -> Path:
    raw = w.to_bytes([w.G("memory", [
        w.T("regionsCount", value=1), w.T("regionPageNum", (0,), 0),
        w.T("regionPPN", (0,), ppn, 8), w.T("regionSize", (0,), 16),
        w.T("Memory", (0, 0), block=b"\x41" * 16 * PAGE, align=PAGE)])])
    path.write_bytes(raw)
    return path


def test_absurd_address_space_is_refused(tmp_path):
    cp = absurd_checkpoint(tmp_path / "petabyte.vmss", (1 << 50) // PAGE)  # 1 PiB up
    out = tmp_path / "pib.raw"
    with pytest.raises(LimitError, match="more than the"):
        extract_memory(str(cp), str(out))
    assert list(tmp_path.iterdir()) == [cp]  # nothing created, not even a temporary
    r = vmsift("memory", "extract", cp, out)
    assert r.returncode == LimitError.exit_code and "allowed" in r.stderr
    assert "Traceback" not in r.stderr and not out.exists()
    # a lower limit refuses 2 TiB; the default writes it, sparse (64 KiB of data at 2 TiB)
    cp = absurd_checkpoint(tmp_path / "two.vmss", (2 << 40) // PAGE)
    r = vmsift("memory", "extract", cp, out, "--max-gib", "1024")
    assert r.returncode == LimitError.exit_code and not out.exists()
    r = vmsift("memory", "extract", cp, out, "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["size"] == (2 << 40) + 16 * PAGE and doc["written"] == 16 * PAGE
    assert data_runs(out) == [(2 << 40, 16 * PAGE)]


def test_damaged_input_is_a_clear_error(tmp_path, files):
    empty = tmp_path / "empty.vmss"
    empty.write_bytes(b"")
    with pytest.raises(TruncatedError):
        extract_memory(str(empty), str(tmp_path / "e.raw"))
    r = vmsift("memory", "extract", empty, tmp_path / "e.raw")
    assert r.returncode == 3 and f"{empty} @ 0x0" in r.stderr and "Traceback" not in r.stderr
    no_memory = tmp_path / "nomem.vmss"
    no_memory.write_bytes(w.to_bytes(w.common_groups()))
    with pytest.raises(FormatError, match="no memory group"):
        open_guest_memory(BytesSource(no_memory.read_bytes(), str(no_memory)))


def test_cli_extract_and_refuse_overwrite(files, tmp_path):
    out = tmp_path / "cli.raw"
    r = vmsift("memory", "extract", files["vmsn"], out)
    assert r.returncode == 0, r.stderr
    assert f"{out}: {4 * GIB + 128 * 2**20} bytes of guest physical memory" in r.stdout
    assert f"{out}.png: screenshot" in r.stdout
    r = vmsift("memory", "extract", files["vmsn"], out)
    assert r.returncode == 6 and "output exists" in r.stderr
    r = vmsift("memory", "extract", files["vmsn"], out, "--force", "--json")
    doc = json.loads(r.stdout)
    assert [reg["guest_start"] for reg in doc["regions"]] == [0, 4 * GIB]
