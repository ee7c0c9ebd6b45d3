"""The manifest and certificate of an OVF package checked: every digest against its file
(each file read once, as a stream), and the signature of the manifest."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import IntegrityError, VmsiftError
from .ovf import Package, manifest_files

HASH_BLOCK = 4 << 20


class DigestError(IntegrityError):
    """A file of a package does not match its manifest digest, is missing, or the
    manifest's signature does not verify."""


@dataclass
class Check:
    name: str
    algorithm: str
    expected: str
    actual: str | None
    status: str          # ok | mismatch | missing

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def verify(pkg: Package, progress: Callable[[int], None] | None = None) -> list[Check]:
    """Every digest of the manifest against its file, each file read once (all its
    algorithms at a time), in the order the files lie on the volume."""
    by_name, paths = manifest_files(pkg)
    checks: list[Check] = []
    located = []
    for name, entries in by_name.items():
        if name not in paths:
            checks += [Check(name, e.algorithm, e.hexdigest, None, "missing") for e in entries]
            continue
        offset = pkg.volume.stat(paths[name]).extra.get("archive_offset", 0)
        located.append((offset, paths[name], name, entries))
    for _, path, name, entries in sorted(located, key=lambda t: t[0]):
        hashes = {e.algorithm: hashlib.new(e.algorithm.lower()) for e in entries}
        try:
            with pkg.volume.open(path) as src:
                for offset in range(0, src.size, HASH_BLOCK):
                    block = src.read_exact(offset, min(HASH_BLOCK, src.size - offset), "file")
                    for h in hashes.values():
                        h.update(block)
                    if progress:
                        progress(len(block))
        except VmsiftError as e:  # cut short (a truncated OVA) or unreadable
            checks += [Check(name, d.algorithm, d.hexdigest, None, f"unreadable: {e}")
                       for d in entries]
            continue
        for e in entries:
            actual = hashes[e.algorithm].hexdigest()
            checks.append(Check(name, e.algorithm, e.hexdigest, actual,
                                "ok" if actual == e.hexdigest else "mismatch"))
    return checks


def signature_status(pkg: Package) -> dict[str, Any] | None:
    """The ``.cert``: signature algorithm, signer, and whether the signature over the
    manifest verifies with the certificate's key (the certificate itself is not checked
    against any trust store)."""
    cert = pkg.certificate
    if cert is None:
        return None
    out: dict[str, Any] = {"path": pkg.certificate_path, "algorithm": cert.algorithm,
                           "signed_file": cert.signed_file,
                           "certificates": len(cert.certificates), "subject": None,
                           "signature": "absent" if cert.signature is None else "unchecked"}
    if not cert.certificates or cert.signature is None or pkg.manifest_bytes is None:
        return out
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

    try:
        x = x509.load_pem_x509_certificate(cert.certificates[0])
    except ValueError as e:
        out["signature"] = f"unreadable certificate: {e}"
        return out
    out["subject"] = x.subject.rfc4514_string()
    algo = {"SHA1": hashes.SHA1, "SHA256": hashes.SHA256,
            "SHA512": hashes.SHA512}[cert.algorithm or "SHA256"]()
    key = x.public_key()
    try:
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(cert.signature, pkg.manifest_bytes, padding.PKCS1v15(), algo)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(cert.signature, pkg.manifest_bytes, ec.ECDSA(algo))
        else:
            out["signature"] = "unchecked (key type not supported)"
            return out
        out["signature"] = "valid"
    except (InvalidSignature, ValueError):  # ValueError: a signature of the wrong shape
        out["signature"] = "invalid"
    return out


def failures(checks: list[Check], signature: dict[str, Any] | None,
             source: str | None = None) -> DigestError | None:
    """The error naming every file that failed, or None when all is well."""
    bad = [f"{c.name} ({c.algorithm} {c.status})" for c in checks if c.status != "ok"]
    if signature and signature["signature"] == "invalid":
        bad.append(f"{signature['path']} (signature of the manifest does not verify)")
    if not bad:
        return None
    return DigestError("integrity check failed: " + ", ".join(bad), source=source)


