"""The hardening rules `vmsift audit` checks, as data: one row per rule.

Columns: ``id``, ``severity`` (high, medium, low, info), ``config`` (``vmx`` or ``vm.cfg``),
``key`` (a pattern over lower-cased configuration keys: ``fnmatch`` wildcards, ``|`` between
alternatives), ``predicate`` (the name of a test in `vmsift.forensics.audit.PREDICATES`),
``expected`` (what the predicate compares with), ``default`` (the value VMware / Xen assume
when the key is absent; None when absent is itself a finding), ``why`` and ``source`` (the
guidance item, see ``docs/audit.md``). Booleans are compared as ``true`` / ``false``.

A device key (``floppy0.present``, ``scsi0:1.mode``) is not checked when its device is
explicitly absent (``<device>.present = "FALSE"``). Keys the engine derives from files other
than the configuration: ``<disk>.createtype`` (the disk descriptor's createType) and, for
``vm.cfg``, ``disk<N>.mode`` / ``disk<N>.backend``, ``vif<N>.<option>`` and the VNC settings
merged from ``vfb`` (``vnc``, ``vnclisten``, ``vncpasswd``).
"""

from __future__ import annotations

from typing import NamedTuple


class Rule(NamedTuple):
    id: str
    severity: str
    config: str
    key: str
    predicate: str
    expected: object
    default: str | None
    why: str
    source: str


SCG = "vSphere 6.0 Security Configuration (Hardening) Guide"
CIS = "CIS VMware ESXi 6.7 Benchmark"
CIS8 = "CIS VMware ESXi 8 Benchmark"
STIG = "DISA VMware vSphere 8.0 Virtual Machine STIG"
XL = "xl.cfg(5) / xmdomain.cfg(5) (Xen)"
OVM = "Oracle VM Security Guide 3.4"

RULES: tuple[Rule, ...] = (
    # --- guest isolation --------------------------------------------------------------------
    Rule("VMX-ISO-COPY", "low", "vmx", "isolation.tools.copy.disable", "one_of", ["true"],
         "true", "copy from the guest to the remote console's clipboard is allowed",
         f"{SCG}: VM.disable-console-copy; DISA vSphere 7.0 VM STIG V-256450"),
    Rule("VMX-ISO-PASTE", "low", "vmx", "isolation.tools.paste.disable", "one_of", ["true"],
         "true", "paste from the console's clipboard into the guest is allowed",
         f"{SCG}: VM.disable-console-paste"),
    Rule("VMX-ISO-DND", "low", "vmx", "isolation.tools.dnd.disable", "one_of", ["true"],
         "true", "drag and drop between guest and console is allowed",
         f"{SCG}: VM.disable-console-drag-n-drop"),
    Rule("VMX-ISO-GUIOPT", "low", "vmx", "isolation.tools.setguioptions.enable", "one_of",
         ["false"], "false", "the guest may change the console's copy/paste GUI options",
         f"{SCG}: VM.disable-console-gui-options; {STIG}: GUI copy/paste disabled"),
    Rule("VMX-ISO-CONNECT", "medium", "vmx", "isolation.device.connectable.disable", "one_of",
         ["true"], "false", "unprivileged guest users and processes may connect and "
         "disconnect devices (NICs, CD-ROMs)",
         f"{SCG}: VM.prevent-device-interaction-connect; {CIS}: 8.2.7"),
    Rule("VMX-ISO-EDIT", "medium", "vmx", "isolation.device.edit.disable", "one_of", ["true"],
         "false", "unprivileged guest users and processes may modify device settings",
         f"{SCG}: VM.prevent-device-interaction-edit; {CIS}: 8.2.6"),
    Rule("VMX-ISO-SETINFO", "low", "vmx", "tools.setinfo.sizelimit", "in_range", [1, 1048576],
         "1048576", "the guest may write more than 1 MiB of name-value pairs into the VMX "
         "(a way to fill the datastore)", f"{SCG}: VM.limit-setinfo-size; {CIS}: 8.1.1"),
    Rule("VMX-ISO-VIX", "medium", "vmx", "isolation.tools.vixmessage.disable", "one_of",
         ["true"], "false", "VIX / guest control messages from the host are accepted by the "
         "guest (commands run inside it)", f"{SCG}: VM.disable-vix-messages"),
    Rule("VMX-ISO-HGFS", "medium", "vmx", "isolation.tools.hgfsserverset.disable", "one_of",
         ["true"], "false", "the host-guest file system (shared folders, file transfer by "
         "VMware Tools) is available", f"{SCG}: VM.disable-hgfs"),
    Rule("VMX-ISO-HOSTINFO", "low", "vmx", "tools.guestlib.enablehostinfo", "one_of",
         ["false"], "false", "the guest can read facts about the host",
         f"{SCG}: VM.restrict-host-info; {CIS8}: 7.24"),
    # --- logging ----------------------------------------------------------------------------
    Rule("VMX-LOG-OFF", "high", "vmx", "logging", "one_of", ["true"], "true",
         "VM logging is disabled: no vmware.log for troubleshooting or forensics",
         f"{STIG}: logging must be enabled on the VM"),
    Rule("VMX-LOG-ROTATE", "low", "vmx", "log.rotatesize", "in_range", [1, 2048000], "0",
         "vmware.log grows without a size limit (it may fill the datastore)",
         f"{CIS8}: 7.27 (log.rotateSize); DISA VCF 9 VM STIG VCFV-9X-000210"),
    Rule("VMX-LOG-KEEP", "low", "vmx", "log.keepold", "in_range", [1, 10], "6",
         "the number of old vmware.log files kept is outside 1..10 (none kept loses "
         "history; more fills the datastore)", f"{CIS8}: 7.26 (log.keepOld = 10)"),
    # --- devices a server rarely needs ------------------------------------------------------
    Rule("VMX-DEV-FLOPPY", "medium", "vmx", "floppy*.present", "one_of", ["false"], "false",
         "a floppy drive is present", f"{SCG}: VM.disconnect-devices-floppy; {CIS}: 8.2.1"),
    Rule("VMX-DEV-SERIAL", "medium", "vmx", "serial*.present", "one_of", ["false"], "false",
         "a serial port is present", f"{SCG}: VM.disconnect-devices-serial; {CIS}: 8.2.4"),
    Rule("VMX-DEV-SERIAL-HOST", "high", "vmx", "serial*.filetype", "not_in",
         ["file", "pipe"], None, "a serial port writes to a file or pipe on the host",
         f"{SCG}: VM.disconnect-devices-serial; {CIS}: 8.2.4"),
    Rule("VMX-DEV-PARALLEL", "medium", "vmx", "parallel*.present", "one_of", ["false"],
         "false", "a parallel port is present",
         f"{SCG}: VM.disconnect-devices-parallel; {CIS}: 8.2.3"),
    Rule("VMX-DEV-PARALLEL-HOST", "high", "vmx", "parallel*.filetype", "not_in",
         ["file", "device"], None, "a parallel port writes to a file or device on the host",
         f"{SCG}: VM.disconnect-devices-parallel; {CIS}: 8.2.3"),
    Rule("VMX-DEV-USB", "medium", "vmx", "usb.present|ehci.present|usb_xhci.present",
         "one_of", ["false"], "false", "a USB controller is present",
         f"{SCG}: VM.disconnect-devices-usb; {CIS}: 8.2.5"),
    Rule("VMX-DEV-CDROM-HOST", "medium", "vmx", "*:*.devicetype", "not_in",
         ["atapi-cdrom", "cdrom-raw"], None, "a CD/DVD drive is backed by a host device",
         f"{SCG}: VM.disconnect-devices-cd (CD/DVD); {CIS}: 8.2.2"),
    Rule("VMX-DEV-SOUND", "low", "vmx", "sound.present", "one_of", ["false"], "false",
         "a sound card is present", f"{STIG}: unneeded devices removed"),
    # --- remote display ---------------------------------------------------------------------
    Rule("VMX-VNC-ON", "medium", "vmx", "remotedisplay.vnc.enabled", "one_of", ["false"],
         "false", "the console is reachable over VNC", f"{SCG}: VM.minimize-console-VNC-use"),
    Rule("VMX-VNC-NOPASS", "high", "vmx", "remotedisplay.vnc.enabled", "needs",
         "remotedisplay.vnc.password|remotedisplay.vnc.key", "false",
         "VNC is enabled without a password", f"{SCG}: VM.minimize-console-VNC-use"),
    Rule("VMX-CONSOLE-MAX", "low", "vmx", "remotedisplay.maxconnections", "in_range", [1, 1],
         None, "more than one remote console connection at a time is allowed (one user "
         "may watch another's session)",
         f"{SCG}: VM.limit-console-connections; {CIS}: 8.1.2; {STIG}: VMCH-80-000195"),
    # --- resource sharing -------------------------------------------------------------------
    Rule("VMX-RES-TPS", "low", "vmx", "sched.mem.pshare.salt", "absent", None, None,
         "transparent page sharing with other VMs that have the same salt (a side channel)",
         f"{SCG}: VM.TransparentPageSharing-inter-VM-Enabled"),
    Rule("VMX-RES-HT", "info", "vmx", "sched.cpu.htsharing", "one_of", ["none", "internal"],
         "any", "the VM's vCPUs share hyper-threaded cores with other VMs (L1TF-class side "
         "channels)", "vSphere Resource Management guide: hyperthreaded core sharing"),
    Rule("VMX-RES-ALLOC", "info", "vmx",
         "sched.mem.min|sched.mem.max|sched.mem.shares|sched.cpu.min|sched.cpu.max|"
         "sched.cpu.shares", "any_present", None, None,
         "no CPU or memory reservation, limit or shares: nothing stops another VM from "
         "starving this one", "vSphere Security guide: use resource allocation against "
         "denial of service"),
    # --- disks ------------------------------------------------------------------------------
    Rule("VMX-DISK-NONPERSIST", "medium", "vmx", "*:*.mode", "not_in",
         ["independent-nonpersistent", "nonpersistent"], None,
         "an independent non-persistent disk: every change is lost at power off (what an "
         "attacker did leaves no trace)", f"{SCG}: VM.disable-independent-nonpersistent"),
    Rule("VMX-DISK-INDEP", "medium", "vmx", "*:*.mode", "not_in",
         ["independent-persistent"], None,
         "an independent disk is skipped by snapshots, so by snapshot-based backups",
         "vSphere Virtual Machine Administration: independent disk modes"),
    Rule("VMX-DISK-RDMP", "medium", "vmx", "*:*.createtype", "not_in",
         ["vmfspassthroughrawdevicemap", "vmfsrdmp"], None,
         "a raw device map in physical compatibility mode: no snapshots, no VMware-level "
         "backup; its data is on the LUN", "vSphere Storage guide: RDM compatibility modes"),
    Rule("VMX-DISK-CTK", "info", "vmx", "ctkenabled", "one_of", ["true"], "false",
         "change tracking is off: every backup reads the whole disk",
         "VMware KB 1020128: Changed Block Tracking"),
    # --- network ----------------------------------------------------------------------------
    Rule("VMX-NET-STATICMAC", "low", "vmx", "ethernet*.addresstype", "not_in", ["static"],
         None, "a statically set MAC address (a clone or a spoofed address goes unnoticed)",
         "vSphere Security guide: MAC address changes and forged transmits"),
    Rule("VMX-NET-MGMT", "high", "vmx", "ethernet*.networkname", "not_matches",
         r"(?i)management", None, "a NIC is on the same network name as management",
         "vSphere Security guide: isolate the management network"),
    # --- Oracle VM vm.cfg -------------------------------------------------------------------
    Rule("OVM-VNC-ALL", "high", "vm.cfg", "vnclisten", "not_in", ["0.0.0.0", "::", ""],
         "127.0.0.1", "the VNC console listens on every address of the server",
         f"{XL}: vnclisten; {OVM}: console access"),
    Rule("OVM-VNC-NOPASS", "high", "vm.cfg", "vnc", "needs", "vncpasswd", "0",
         "the VNC console has no password", f"{XL}: vncpasswd; {OVM}: console access"),
    Rule("OVM-DISK-SHARED", "medium", "vm.cfg", "disk*.mode", "not_in", ["w!"], None,
         "a disk shared writable with other VMs (no crash-consistent backup of one VM)",
         f"{XL}: disk access mode w!"),
    Rule("OVM-DISK-PHY", "medium", "vm.cfg", "disk*.backend", "not_in", ["phy"], None,
         "a physical disk outside the repository (like an RDM: not in repository backups)",
         f"{XL}: phy: disk backend"),
    Rule("OVM-PCI", "medium", "vm.cfg", "pci", "absent", None, None,
         "a PCI device of the server is passed through to the guest", f"{XL}: pci"),
    Rule("OVM-USB", "low", "vm.cfg", "usb|usbdevice", "one_of", ["false", "0", ""], "0",
         "USB is enabled", f"{XL}: usb, usbdevice"),
    Rule("OVM-SOUND", "low", "vm.cfg", "soundhw", "absent", None, None,
         "a sound card is emulated", f"{XL}: soundhw"),
    Rule("OVM-SERIAL-HOST", "high", "vm.cfg", "serial", "not_matches", r"(?i)^(file|pipe):",
         None, "the serial console writes to a file or pipe on the server", f"{XL}: serial"),
)
