"""Read-only FUSE mounts of datastores, VM snapshots and backup repositories."""
