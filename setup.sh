#!/usr/bin/env bash
# Set up vmsift on a fresh Debian machine: system packages, a venv with vmsift and its test
# extras, then run the main job: the end-to-end demo (examples/demo.sh).
# Usage: bash setup.sh            (as root, or with sudo available)
#        VMSIFT_SETUP_ONLY=1 bash setup.sh   (install only, no demo run)
set -euo pipefail
cd "$(dirname "$0")"

SYSTEM_PACKAGES=(
  python3 python3-venv python3-dev gcc pkg-config   # Python and what compiled wheels need
  qemu-utils                                        # qemu-img / qemu-io: test oracles for VMDK
  fuse3 libfuse3-dev                                # FUSE mounts (pyfuse3)
  e2fsprogs                                         # debugfs/fsck.ext4: partition-file oracles
  ocfs2-tools                                       # mkfs/debugfs/fsck.ocfs2: OCFS2 oracles
  openssl                                           # signs OVF manifests in tests
  fdisk gdisk dosfstools                            # sfdisk/sgdisk/mkfs.vfat: partition oracles
  vmfs-tools vmfs6-tools                            # debugvmfs: VMFS oracles
  qemu-system-x86 busybox-static cpio kmod libc6-dev # a real kernel writes OCFS2 test images
  sleuthkit                                         # mactime: reads `vmsift timeline --bodyfile`
)

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
missing=()
for p in "${SYSTEM_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing system packages: ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[test,fuse]'

if [ -z "${VMSIFT_SETUP_ONLY:-}" ]; then
  echo "setup: done. Main job: examples/demo.sh (a VM made with qemu-img, backed up, changed,"
  echo "backed up again, compared, restored, checked)"
  bash examples/demo.sh
fi
