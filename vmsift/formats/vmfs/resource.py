"""VMFS resource files (``.fdc.sf``, ``.sbc.sf``, ``.pbc.sf``, ``.pb2.sf``, ``.fbb.sf``, ``.jbc.sf``).

A resource file starts with a header (`ResourceHeader`); then come cluster groups, each made
of ``clusters_per_group`` cluster headers (lock + allocation metadata, ``cluster_header``
bytes each) followed by the clusters' resources. `resource_offset` says where resource
(cluster, n) lies inside the file; the file's own block map then says where that is on the
volume.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..layout import Int16ul, Int32ul, Struct

from ...errors import FormatError

ResourceHeader = Struct(
    "resources_per_cluster" / Int32ul,  # 0x00
    "clusters_per_group" / Int32ul,
    "cluster_group_offset" / Int32ul,  # 0x08 offset of group 0 in the file
    "resource_size" / Int32ul,  # 0x0c bytes per resource (0: bitmap-only, e.g. file blocks)
    "cluster_group_size" / Int32ul,  # 0x10
    "num_resources_lo" / Int32ul,
    "num_cluster_groups" / Int32ul,  # 0x18
    "num_resources_hi" / Int32ul,
    "signature" / Int32ul,  # 0x20 "rfmd" on VMFS6
    "version" / Int32ul,
    "flags" / Int32ul,  # 0x28 2 = child of a parent resource, 0x20 = unmap bitmap
    "affinity_per_cluster" / Int16ul,
    "affinity_per_resource" / Int16ul,
    "bits_per_resource" / Int32ul,  # 0x30
    "child_meta_offset" / Int32ul,  # 0x34
    "parent_resources_per_cluster" / Int32ul,
    "parent_clusters_per_group" / Int32ul,
    "parent_cluster_group_size" / Int32ul,  # 0x40
)
HEADER_SIZE = ResourceHeader.sizeof()


@dataclass(frozen=True)
class ResourceGeometry:
    """The layout of one resource file."""

    kind: str
    resources_per_cluster: int
    clusters_per_group: int
    cluster_group_offset: int
    resource_size: int
    cluster_group_size: int
    num_resources: int
    num_cluster_groups: int
    flags: int
    child_meta_offset: int
    cluster_header: int

    @classmethod
    def parse(cls, kind: str, raw: bytes, cluster_header: int, *, source: str,
              offset: int) -> ResourceGeometry:
        h = ResourceHeader.parse(raw)
        geo = cls(kind, h.resources_per_cluster, h.clusters_per_group, h.cluster_group_offset,
                  h.resource_size, h.cluster_group_size,
                  (h.num_resources_hi << 32) | h.num_resources_lo, h.num_cluster_groups, h.flags,
                  h.child_meta_offset, cluster_header)
        if not 0 <= geo.resources_per_cluster <= 1 << 16 or not 0 < geo.clusters_per_group <= 1 << 16:
            raise FormatError(f"{kind} resource header: {geo.resources_per_cluster} resources per "
                              f"cluster, {geo.clusters_per_group} clusters per group",
                              source=source, offset=offset)
        if geo.resource_size > 1 << 24:
            raise FormatError(f"{kind} resource size {geo.resource_size} is absurd",
                              source=source, offset=offset + 0x0C)
        return geo

    def resource_offset(self, cluster: int, resource: int) -> int:
        """File offset of resource ``resource`` of cluster ``cluster``."""
        group, in_group = divmod(cluster, self.clusters_per_group)
        return (self.cluster_group_offset + group * self.cluster_group_size
                + self.clusters_per_group * self.cluster_header
                + in_group * self.resources_per_cluster * self.resource_size
                + resource * self.resource_size)

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in (
            "kind", "resources_per_cluster", "clusters_per_group", "cluster_group_offset",
            "resource_size", "cluster_group_size", "num_resources", "num_cluster_groups",
            "flags")}
