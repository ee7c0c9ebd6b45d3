#!/usr/bin/env bash
# The end-to-end demo. A datastore folder with one VMware VM (two disks made by qemu-img, a
# snapshot tree in its .vmsd, a vmware.log) is inspected, listed, audited and put on a
# timeline; then backed up with its snapshot tree, changed (a new snapshot), backed up again
# (reading only what changed), compared, restored disk by disk and whole, mounted and checked.
# Usage: bash examples/demo.sh [WORKDIR]     (default: a new temporary folder, kept)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
vmsift() { "$here/.venv/bin/vmsift" "$@"; }
work=${1:-$(mktemp -d /tmp/vmsift-demo.XXXXXX)}
mkdir -p "$work" && cd "$work"
export VMSIFT_REPOSITORY="$work/repo" VMSIFT_PASSWORD=demo VMSIFT_CACHE_DIR="$work/cache"
step() { printf '\n== %s\n' "$*"; }
fill() {  # fill DISK OFFSET MiB random|text: fresh bytes (text: base64, compresses to 3/4)
  if [ "$4" = text ]; then head -c $(( $3 * 786432 )) /dev/urandom | base64 -w 0; else
    head -c $(( $3 << 20 )) /dev/urandom; fi > fill.bin
  qemu-io -f vmdk -c "write -s fill.bin $2 $3M" "$1" >/dev/null && rm fill.bin
}
snap() { qemu-img create -q -f vmdk -b "$1" -F vmdk "$2"; }  # a snapshot delta over a parent
vmsd_time() {  # snapshotI.createTimeHigh/Low at DAYS ago, HH:MM:SS (UTC): microseconds, 2 x int32
  local us=$(( $(date -u -d "-$2 days $3" +%s) * 1000000 )) low
  low=$(( us & 0xffffffff )); (( low >= 1 << 31 )) && low=$(( low - (1 << 32) ))
  printf 'snapshot%d.createTimeHigh = "%d"\nsnapshot%d.createTimeLow = "%d"' "$1" $(( us >> 32 )) "$1" "$low"
}
logtime() { date -u -d "-$1 days $2" +%Y-%m-%dT%H:%M:%S.000Z; }
vmsd_snapshot() {  # INDEX UID PARENT|- NAME DAYS HH:MM:SS DISK0 DISK1: one snapshot of a .vmsd
  local i=$1
  printf 'snapshot%d.uid = "%s"\n' "$i" "$2"
  [ "$3" = - ] || printf 'snapshot%d.parent = "%s"\n' "$i" "$3"
  printf 'snapshot%d.filename = "web-Snapshot%s.vmsn"\nsnapshot%d.displayName = "%s"\n' "$i" "$2" "$i" "$4"
  vmsd_time "$i" "$5" "$6"; printf '\nsnapshot%d.numDisks = "2"\n' "$i"
  printf 'snapshot%d.disk0.fileName = "%s"\nsnapshot%d.disk0.node = "scsi0:0"\n' "$i" "$7" "$i"
  printf 'snapshot%d.disk1.fileName = "%s"\nsnapshot%d.disk1.node = "scsi0:1"\n' "$i" "$8" "$i"
}

step "a datastore folder with VM web: a 1 GiB system disk and a 256 MiB data disk (qemu-img),"
printf '   two snapshots (installed, patched) and the running deltas, .vmx, .vmsd, vmware.log\n'
mkdir -p ds/web && cd ds/web
qemu-img create -q -f vmdk -o subformat=monolithicSparse web.vmdk 1G
qemu-img create -q -f vmdk -o subformat=monolithicSparse web_1.vmdk 256M
fill web.vmdk 0 64 text; fill web.vmdk 512M 16 random; fill web_1.vmdk 0 8 random  # install
snap web.vmdk web-000001.vmdk; snap web_1.vmdk web_1-000001.vmdk               # "installed"
fill web-000001.vmdk 8M 1 random; fill web_1-000001.vmdk 4M 1 text            # the patches
snap web-000001.vmdk web-000002.vmdk; snap web_1-000001.vmdk web_1-000002.vmdk # "patched"
fill web-000002.vmdk 100M 4 text                                              # running since
cat > web.vmx <<'VMX'
.encoding = "UTF-8"
config.version = "8"
virtualHW.version = "19"
displayName = "web"
guestOS = "ubuntu-64"
memSize = "2048"
numvcpus = "2"
scsi0.present = "TRUE"
scsi0.virtualDev = "pvscsi"
scsi0:0.present = "TRUE"
scsi0:0.fileName = "web-000002.vmdk"
scsi0:1.present = "TRUE"
scsi0:1.fileName = "web_1-000002.vmdk"
ethernet0.present = "TRUE"
ethernet0.virtualDev = "vmxnet3"
ethernet0.networkName = "VM Network"
ethernet0.addressType = "static"
ethernet0.address = "00:50:56:01:02:03"
RemoteDisplay.vnc.enabled = "TRUE"
RemoteDisplay.vnc.port = "5901"
isolation.tools.copy.disable = "FALSE"
floppy0.present = "TRUE"
uuid.bios = "42 1a 6b 3c 9d 2e 4f 10-8a 7b 6c 5d 4e 3f 2a 1b"
VMX
cat > web.vmsd <<VMSD
.encoding = "UTF-8"
snapshot.lastUID = "2"
snapshot.current = "2"
snapshot.numSnapshots = "2"
$(vmsd_snapshot 0 1 - installed 9 10:02:14 web.vmdk web_1.vmdk)
$(vmsd_snapshot 1 2 1 patched 2 22:40:12 web-000001.vmdk web_1-000001.vmdk)
VMSD
cat > vmware.log <<LOG
$(logtime 9 09:14:03) In(05) vmx Log for VMware ESX pid=2099453 version=8.0.3 build=build-24022510 option=Release
$(logtime 9 09:14:03) In(05) vmx Hostname=esx01.lab.example
$(logtime 9 09:14:05) In(05) vmx DISK: OPEN scsi0:0 '/vmfs/volumes/datastore1/web/web.vmdk' persistent R[]
$(logtime 9 09:14:06) In(05) vmx VMX_PowerOn: ModuleTable_PowerOn = 1
$(logtime 9 10:02:11) In(05) vmx SnapshotVMX_TakeSnapshot start: 'installed', deviceState=0
$(logtime 9 10:02:14) In(05) vmx SnapshotVMXTakeSnapshotComplete: Done with snapshot 'installed': 1
$(logtime 2 22:40:09) In(05) vmx SnapshotVMX_TakeSnapshot start: 'patched', deviceState=0
$(logtime 2 22:40:12) In(05) vmx SnapshotVMXTakeSnapshotComplete: Done with snapshot 'patched': 2
$(logtime 1 03:00:00) Wa(03) vcpu-0 Guest attempted to use an unsupported MSR.
LOG
cd "$work"

step "inspect: what a file is, by its content (the snapshot tree of web.vmsd)"
vmsift inspect ds/web/web.vmsd

step "the VMs of the datastore, their disks and snapshot chains"
vmsift ds vms ds

step "hardening audit of every VM (vSphere / CIS / STIG guidance)"
vmsift audit ds || [ $? -eq 1 ]  # exit 1: findings (the demo VM has some on purpose)

step "the datastore's timeline: vmware.log events, snapshots, file times (the oldest 10)"
vmsift timeline ds | sed -n 1,13p

step "an encrypted repository; backup 1 keeps the snapshot tree (--chain)"
vmsift init
vmsift backup ds --chain --tag first

step "the VM takes a snapshot (new deltas) and writes 2 MiB: backup 2 reads only those"
(cd ds/web
 snap web-000002.vmdk web-000003.vmdk; snap web_1-000002.vmdk web_1-000003.vmdk
 fill web-000003.vmdk 300M 2 random
 sed -i 's/web-000002.vmdk/web-000003.vmdk/; s/web_1-000002.vmdk/web_1-000003.vmdk/' web.vmx
 sed -i 's/lastUID = "2"/lastUID = "3"/; s/current = "2"/current = "3"/; s/numSnapshots = "2"/numSnapshots = "3"/' web.vmsd
 vmsd_snapshot 2 3 2 "before upgrade" 0 "$(date -u +%H:%M:%S)" web-000002.vmdk web_1-000002.vmdk >> web.vmsd
)
vmsift backup ds --chain
vmsift snapshots
first=$(vmsift snapshots --json | "$here/.venv/bin/python" -c "import json,sys; print(json.load(sys.stdin)['snapshots'][0]['short_id'])")

step "what changed between the two backups"
vmsift diff "$first" latest

step "restore the system disk as it was at backup 1 and check its digest against qemu-img's"
vmsift restore "$first" --disk web.vmdk --target restored-first
qemu-img convert -f vmdk -O raw ds/web/web-000002.vmdk qemu-img.raw  # the disk at backup 1
want=$(sha256sum < qemu-img.raw | cut -c1-64) got=$(sha256sum < restored-first/web.raw | cut -c1-64)
rm qemu-img.raw
echo "sha256 restored  $got"
echo "sha256 qemu-img  $want"
[ "$got" = "$want" ] && echo "restored disk = source at backup 1 (sha256)"

step "restore the whole VM with its snapshot tree, and list it as a datastore"
vmsift restore latest:web --chain --target restored-vm
vmsift ds vms restored-vm
qemu-img compare -q -f vmdk -F vmdk ds/web/web-000003.vmdk restored-vm/web-000003.vmdk \
  && echo "restored top delta = source (qemu-img compare)"

if [ -e /dev/fuse ] && command -v fusermount3 >/dev/null; then
  step "mount the repository read-only (FUSE): every backup's VM, its disks and snapshot tree"
  mkdir -p mnt
  vmsift mount -r "$VMSIFT_REPOSITORY" mnt
  trap 'vmsift umount "$work/mnt" 2>/dev/null || true' EXIT
  ls -l mnt/latest/ mnt/latest/web/ mnt/latest/web/web.tree/
  cmp mnt/snapshots/"$first"/web/web.raw restored-first/web.raw \
    && echo "mounted disk of backup 1 = restored disk (cmp)"
  vmsift umount mnt
fi

step "check every pack, index and snapshot of the repository, reading all data"
vmsift check --read-data
printf '\ndemo folder: %s\n' "$work"
