"""The backup repository: deduplicated, compressed, optionally encrypted, granular per VM and
per disk.

Nouns as modules: `crypto` (keys, sealing, chunk ids), `backends` (where objects live, with a
retry wrapper), `pack` (many blobs in one object), `index` (blob -> pack, a local sqlite
cache of the repository's index objects), `chunker` (fixed, aligned cells over an allocation
map), `manifest` (a disk's cell list in leaves), `snapshot` (one VM at one point in time),
`lock`, `repository` (ties them together and opens stored disks and files as ByteSources),
`archiver` (sources in, snapshots out), `restorer`, `checker`. The byte layout of every object
is in ``docs/repository.md``.
"""
