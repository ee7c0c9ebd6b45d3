"""Forensic workflows on top of the datastore layer: hardening audit, timeline."""
