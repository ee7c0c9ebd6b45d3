#!/usr/bin/env bash
# The end-to-end demo: a VMware VM folder made with qemu-img, inspected, backed up, changed,
# backed up again (reading only what changed), compared, restored disk by disk and checked.
# Usage: bash examples/demo.sh [WORKDIR]     (default: a new temporary folder, kept)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
vmsift() { "$here/.venv/bin/vmsift" "$@"; }
work=${1:-$(mktemp -d /tmp/vmsift-demo.XXXXXX)}
mkdir -p "$work" && cd "$work"
export VMSIFT_REPOSITORY="$work/repo" VMSIFT_PASSWORD=demo VMSIFT_CACHE_DIR="$work/cache"
step() { printf '\n== %s\n' "$*"; }

step "a VM folder: a 1 GiB disk with a snapshot delta (qemu-img), its .vmx"
mkdir -p vm
qemu-img create -q -f vmdk -o subformat=monolithicSparse vm/web.vmdk 1G
qemu-io -f vmdk -c "write -P 0x11 0 64M" -c "write -P 0x22 512M 16M" vm/web.vmdk >/dev/null
qemu-img create -q -f vmdk -b web.vmdk -F vmdk vm/web-000001.vmdk
qemu-io -f vmdk -c "write -P 0x33 8M 1M" vm/web-000001.vmdk >/dev/null
cat > vm/web.vmx <<'VMX'
.encoding = "UTF-8"
displayName = "web"
guestOS = "ubuntu-64"
memsize = "2048"
scsi0.present = "TRUE"
scsi0.virtualDev = "lsilogic"
scsi0:0.present = "TRUE"
scsi0:0.fileName = "web-000001.vmdk"
VMX
vmsift ds vms vm

step "an encrypted repository and a first backup"
vmsift init
vmsift backup vm --tag first

step "a snapshot (new delta) gets 2 MiB: backup 2 reads only it, backup 3 reads nothing"
qemu-img create -q -f vmdk -b web-000001.vmdk -F vmdk vm/web-000002.vmdk
qemu-io -f vmdk -c "write -P 0x44 300M 2M" vm/web-000002.vmdk >/dev/null
sed -i 's/web-000001.vmdk/web-000002.vmdk/' vm/web.vmx
vmsift backup vm
vmsift backup vm
vmsift snapshots
first=$(vmsift snapshots --json | "$here/.venv/bin/python" -c "import json,sys; print(json.load(sys.stdin)['snapshots'][0]['short_id'])")
vmsift diff "$first" latest

step "restore the disk as it was at the first backup, and the whole VM as it is now"
vmsift restore "$first" --disk web.vmdk --target restored-first
vmsift restore latest:web --target restored-vm --format vmdk
qemu-img compare -q -f vmdk -F vmdk vm/web-000002.vmdk restored-vm/web.vmdk && echo "restored VM disk = source (qemu-img compare)"
vmsift check --read-data
printf '\ndemo folder: %s\n' "$work"
