"""VMFS 3/5/6 (and VMFS-L) on-disk structures.

The layout lives here (`vmsift.formats.layout` Structs and small pure decoders); assembling devices into a
logical volume, reading files and directories is in `vmsift.datastore.vmfs`.

* `lvm`: the LVM device header at 1 MiB of each device (partition), its volume table and
  physical-extent table;
* `fs`: the file-system descriptor at 2 MiB of the logical volume, heartbeat slots, on-disk
  locks, file descriptors (inodes), directory entries and block addresses;
* `resource`: the header of the resource files (``.fdc.sf``, ``.sbc.sf``, ``.pbc.sf`` ...)
  and where resource (cluster, n) lives inside such a file.

See docs/formats/vmfs.md for the layouts, where each fact comes from and what is uncertain.
"""




