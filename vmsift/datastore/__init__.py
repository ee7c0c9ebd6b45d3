"""Datastores: detect and open volume images and folders, find VMs, open their disks."""
