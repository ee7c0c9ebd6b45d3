"""Pure decoders and encoders of the files a VM leaves on a datastore.

A formats module never opens a path: it takes bytes or a `vmsift.source.ByteSource`.
"""
