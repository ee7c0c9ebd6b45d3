"""The examiner's side: guest memory out of checkpoint files, carving images for VM artefacts."""
