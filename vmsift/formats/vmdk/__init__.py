"""VMDK: text descriptors and the binary extent kinds."""
