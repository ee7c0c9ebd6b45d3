"""The examiner's side: hardening audit, timeline, guest memory out of checkpoint files, carving."""
