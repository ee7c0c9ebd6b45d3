"""vmsift: read, inspect, mount and back up the storage behind VMware and Oracle VM machines."""

__version__ = "0.1.0"
