"""The manifest: what a generated clip claims, signed into the file as C2PA or as signed metadata.

    sign_file("clip.mp4", claims(request))   # C2PA where it can sign the format, else the container's tags
    read_manifest("clip.mp4")                # present, intact, signer, claims

The signing key and its certificate are issued locally on first use (`key_folder()`), or are your own.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from openseedance import __version__, media

log = logging.getLogger(__name__)

TRAINED_ALGORITHMIC_MEDIA = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
ASSERTION = "org.openseedance.provenance"
METADATA_KEY = "openseedance_manifest"
_C2PA_SUFFIXES = {".mp4": "video/mp4", ".mov": "video/quicktime", ".m4v": "video/x-m4v"}


def key_folder() -> Path:
    """Where the signing certificate lives: $OPENSEEDANCE_C2PA_DIR, else the user's cache folder."""
    if os.environ.get("OPENSEEDANCE_C2PA_DIR"):
        return Path(os.environ["OPENSEEDANCE_C2PA_DIR"]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "openseedance" / "c2pa"


def _write_private(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def _issue_certificates(folder: Path) -> None:
    """A local CA and an ES256 signing certificate it issues (C2PA rejects a self-signed leaf)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    def name(common: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common),
                          x509.NameAttribute(NameOID.ORGANIZATION_NAME, "openseedance (local)")])  # fmt: skip

    def usage(sign: bool) -> x509.KeyUsage:
        return x509.KeyUsage(digital_signature=sign, content_commitment=False, key_encipherment=False,
                             data_encipherment=False, key_agreement=False, key_cert_sign=not sign,
                             crl_sign=not sign, encipher_only=False, decipher_only=False)  # fmt: skip

    now = dt.datetime.now(dt.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = name(f"openseedance local CA {os.urandom(4).hex()}")
    start, end = now - dt.timedelta(days=1), now + dt.timedelta(days=3650)
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(end)
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(usage(False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))  # fmt: skip
    leaf = (x509.CertificateBuilder().subject_name(name("openseedance signer")).issuer_name(ca_name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(usage(True), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))  # fmt: skip
    pem = serialization.Encoding.PEM
    folder.mkdir(parents=True, exist_ok=True)
    _write_private(folder / "signer.key", key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                                            serialization.NoEncryption()))  # fmt: skip
    _write_private(folder / "ca.pem", ca.public_bytes(pem))
    _write_private(folder / "signer.pem", leaf.public_bytes(pem) + ca.public_bytes(pem))
    log.info("issued a local signing certificate in %s", folder)


def signing_credentials() -> tuple[bytes, bytes]:
    """(certificate chain PEM, private key PEM): the ones in key_folder(), issued there on first use.
    Put your own `signer.pem` (leaf first, then its issuers) and `signer.key` (EC P-256) there to sign
    as yourself."""
    folder = key_folder()
    if not (folder / "signer.pem").is_file() or not (folder / "signer.key").is_file():
        _issue_certificates(folder)
    return (folder / "signer.pem").read_bytes(), (folder / "signer.key").read_bytes()


def claims(request: dict[str, Any]) -> dict[str, Any]:
    """What a generated clip's manifest asserts, from its resolved request."""
    created = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    return {"generator": f"openseedance {__version__}", "model": request.get("model"), "created": created,
            **request.get("provenance", {})}  # fmt: skip


def _c2pa_manifest(claims: dict[str, Any], title: str) -> dict[str, Any]:
    agent = {"name": "openseedance", "version": __version__}
    created = {"action": "c2pa.created", "digitalSourceType": TRAINED_ALGORITHMIC_MEDIA, "softwareAgent": agent}
    return {"claim_generator_info": [agent], "title": title,
            "assertions": [{"label": "c2pa.actions", "data": {"actions": [created]}},
                           {"label": ASSERTION, "data": claims}]}  # fmt: skip


def _sign_c2pa(path: Path, claims: dict[str, Any]) -> None:
    import c2pa

    chain, key = signing_credentials()
    signer = c2pa.Signer.from_info(c2pa.C2paSignerInfo(c2pa.C2paSigningAlg.ES256, chain, key, None))
    tmp = path.with_name(f".{path.stem}.signing{path.suffix}")
    try:
        with c2pa.Builder(json.dumps(_c2pa_manifest(claims, path.name))) as builder:
            builder.sign_file(str(path), str(tmp), signer)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
        signer.close()


def content_digest(path: Path) -> str:
    """SHA-256 over every stream's packets: what the metadata manifest signs (tags excluded)."""
    import av

    digest = hashlib.sha256()
    with av.open(str(path)) as container:
        for packet in container.demux():
            if packet.size:
                digest.update(packet.stream.index.to_bytes(2, "big") + bytes(packet))
    return digest.hexdigest()


def _canonical(data: dict[str, Any]) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()


def _sign_metadata(path: Path, claims: dict[str, Any]) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    chain, key_pem = signing_credentials()
    key = serialization.load_pem_private_key(key_pem, password=None)
    body = {"claims": claims, "content_sha256": content_digest(path)}
    signature = key.sign(_canonical(body), ec.ECDSA(hashes.SHA256()))
    leaf = x509.load_pem_x509_certificates(chain)[0].public_bytes(serialization.Encoding.PEM).decode()
    record = {**body, "signature": base64.b64encode(signature).decode(), "certificate": leaf}
    media.retag(path, {METADATA_KEY: json.dumps(record, sort_keys=True)})


def sign_file(path: str | os.PathLike, claims: dict[str, Any], method: str = "auto") -> str:
    """Add a signed provenance manifest to a written media file, in place. `method`: "c2pa", "metadata"
    (a signed manifest in the container's tags) or "auto" (C2PA where it can sign this format, else
    metadata). Returns the method used."""
    path = Path(path)
    if method not in ("auto", "c2pa", "metadata"):
        raise ValueError(f"manifest method must be auto, c2pa or metadata, got {method!r}")
    if method in ("auto", "c2pa") and path.suffix.lower() in _C2PA_SUFFIXES:
        try:
            _sign_c2pa(path, claims)
            return "c2pa"
        except Exception as err:  # no c2pa library, an unusable key, a format it refuses
            if method == "c2pa":
                raise ValueError(f"{path}: cannot sign a C2PA manifest ({type(err).__name__}: {err})") from None
            log.warning("C2PA signing failed (%s: %s); signing the manifest into the metadata", type(err).__name__, err)
    elif method == "c2pa":
        raise ValueError(f"{path}: C2PA signing supports {', '.join(_C2PA_SUFFIXES)} files")
    _sign_metadata(path, claims)
    return "metadata"


@dataclass
class ManifestResult:
    present: bool
    intact: bool = False
    kind: str | None = None  # "c2pa" or "metadata"
    signer: str | None = None
    claims: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)  # why it is not intact
    notes: list[str] = field(default_factory=list)  # what does not break it, e.g. a locally issued certificate


def _read_c2pa(path: Path) -> ManifestResult | None:
    try:
        import c2pa
    except ImportError:
        return None
    try:
        with c2pa.Reader(str(path)) as reader:
            state = reader.get_validation_state()
            active = reader.get_active_manifest() or {}
            results = reader.get_validation_results() or {}
    except Exception as err:  # no manifest, or a format the reader does not know
        if "notfound" not in type(err).__name__.lower() and "not found" not in str(err).lower():
            log.debug("no readable C2PA manifest in %s: %s", path, err)
        return None
    claims = next((a.get("data", {}) for a in active.get("assertions", []) if a.get("label") == ASSERTION), {})
    failures = [
        f"{f.get('code')}: {f.get('explanation')}" for f in results.get("activeManifest", {}).get("failure", [])
    ]
    # A certificate outside the public trust lists (the local one issued on first use) is reported, not failed.
    notes = [f for f in failures if f.startswith("signingCredential.untrusted")]
    problems = [f for f in failures if f not in notes] or ([] if state in ("Valid", "Trusted") else [f"state {state}"])
    info = active.get("signature_info", {})
    signer = ", ".join(str(info[k]) for k in ("common_name", "issuer") if info.get(k)) or None
    return ManifestResult(True, not problems, "c2pa", signer, claims, problems, notes)


def _read_metadata_manifest(path: Path) -> ManifestResult | None:
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        text = media.read_metadata(path).get(METADATA_KEY)
    except media.MediaError:
        return None
    if text is None:
        return None
    try:
        record = json.loads(text)
        body = {"claims": record["claims"], "content_sha256": record["content_sha256"]}
        cert = x509.load_pem_x509_certificate(record["certificate"].encode())
        signature = base64.b64decode(record["signature"])
    except (ValueError, KeyError, TypeError) as err:
        return ManifestResult(True, False, "metadata", problems=[f"unreadable manifest: {err}"])
    problems = []
    try:
        cert.public_key().verify(signature, _canonical(body), ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, TypeError, ValueError):
        problems.append("the signature does not match the manifest")
    if content_digest(path) != body["content_sha256"]:
        problems.append("the audio or video differs from what was signed")
    signer = f"{cert.subject.rfc4514_string()} (issuer {cert.issuer.rfc4514_string()})"
    notes = ["the certificate is not checked against a trust list"]
    return ManifestResult(True, not problems, "metadata", signer, body["claims"], problems, notes)


def read_manifest(path: str | os.PathLike) -> ManifestResult:
    path = Path(path)
    return _read_c2pa(path) or _read_metadata_manifest(path) or ManifestResult(False)
