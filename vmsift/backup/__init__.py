"""Deduplicating, compressed, optionally encrypted backups of VMs, granular per disk."""
