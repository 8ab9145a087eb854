"""Media a request refers to — data: URLs, uploads, and http(s) URLs where enabled — loaded and decoded safely.

Nothing a client sends is trusted. Bytes are capped before they are decoded; a file's type comes from its magic
bytes, never from its name or declared media type; durations and frame sizes are checked from the container's
packets before any frame is decoded; and every failure, PyAV's and pillow's included, becomes an
:class:`InputError` that names the request field and says what was expected.

Fetching an http(s) URL turns the server into a client of whatever host the user names, so it is off unless
``InputLimits.allow_http`` is set, and then a fetch may reach public addresses only:

* the host is resolved once and refused if *any* address is loopback, private, link-local, multicast, reserved,
  unspecified, carrier-grade NAT or a cloud metadata address (IPv4 embedded in IPv6 is unwrapped and vetted too);
  internal-looking names (``localhost``, ``*.internal``, single labels) are refused without being looked up;
* non-canonical numeric hosts (``2130706433``, ``0x7f.1``, ``0177.0.0.1``) and userinfo (``user@host``) are refused;
* the connection goes to the vetted address itself, with the name only in the Host header and TLS server name,
  so a second DNS answer cannot swap in another address;
* redirects are followed by hand, each hop vetted as above before it is connected to;
* the body is streamed and cut off past ``max_bytes``; the whole fetch, redirects included, has one deadline.
"""

from __future__ import annotations

import base64
import binascii
import functools
import http.client
import io
import ipaddress
import json
import logging
import re
import socket
import ssl
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO
from urllib.parse import quote, unquote, unquote_to_bytes, urljoin, urlsplit, urlunsplit

import av
import numpy as np
import soundfile as sf
from PIL import Image

from openseedance import media

__all__ = [
    "InputError",
    "InputLimits",
    "InputTooLarge",
    "decode_audio",
    "decode_image",
    "decode_video",
    "load_audio",
    "load_bytes",
    "load_image",
    "load_video",
    "post_json",
    "read_upload",
]

log = logging.getLogger(__name__)

MiB = 1 << 20
MAX_FPS = 240.0  # the highest frame rate media.check_format accepts; bounds the frames one second may decode to
_SLACK = 0.1  # seconds: containers round durations to packets (an AAC frame is 64 ms at 16 kHz)
_CHUNK = 64 * 1024
_MAX_URL = 8192
_REDIRECTS = (301, 302, 303, 307, 308)
_USER_AGENT = "openseedance-server"


class InputError(ValueError):
    """A request input the server cannot use: ``field`` names it (``content[2].image_url.url``), ``message`` says
    what to send instead; ``http_status`` is the answer to give (400 here, 413 for :class:`InputTooLarge`, which
    also sets ``too_large``)."""

    http_status = 400
    too_large = False

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class InputTooLarge(InputError):
    """An input over ``InputLimits.max_bytes``."""

    http_status = 413
    too_large = True


@dataclass(frozen=True)
class InputLimits:
    max_bytes: int = 32 * MiB  # per input, as sent (before decoding)
    max_video_seconds: float = 15.0
    max_audio_seconds: float = 15.0
    max_pixels: int = 4096 * 4096  # per image or video frame
    allow_http: bool = False  # off by default: fetching makes the server a client of any host a user names
    fetch_timeout: float = 10.0  # seconds for a whole fetch, name lookups and redirects included
    max_redirects: int = 3
    # Host names or IP addresses exempt from the private-address refusal. Meant for tests against a local
    # server: every user of a server can reach what is listed here.
    allow_hosts: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        object.__setattr__(self, "allow_hosts", frozenset(h.lower().strip("[]") for h in self.allow_hosts))
        for name in ("max_bytes", "max_video_seconds", "max_audio_seconds", "max_pixels", "fetch_timeout"):
            if not getattr(self, name) > 0:
                raise ValueError(f"InputLimits.{name} must be positive, got {getattr(self, name)!r}")
        if self.max_redirects < 0:
            raise ValueError(f"InputLimits.max_redirects must be 0 or more, got {self.max_redirects!r}")


# ---------------------------------------------------------------------------------------------------------------
# Bytes: data: URLs, uploads, http(s)


def load_bytes(url: str, limits: InputLimits, field: str) -> tuple[bytes, str | None]:
    """The bytes a ``data:`` or (if ``limits.allow_http``) ``http(s)`` URL refers to, and its declared media type.

    The declared type is the client's word only; :func:`decode_image` and friends go by the bytes themselves.
    Blocking (an http fetch can take up to ``limits.fetch_timeout``): call it from a worker thread in async code.
    """
    if not isinstance(url, str) or not url.strip():
        raise InputError(field, f"expected a URL string ({_accepted(limits)}), got {_kind_of(url)}")
    url = url.strip()
    head, colon, _ = url.partition(":")
    scheme = head.lower() if colon and re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*", head) else ""
    if scheme == "data":
        return _parse_data_url(url, limits, field)
    if scheme in ("http", "https"):
        if not limits.allow_http:
            raise InputError(
                field,
                "this server does not fetch http(s) URLs; send the media inline as a base64 data: URL "
                "(data:image/png;base64,...) or as a multipart upload",
            )
        return _fetch(url, limits, field)
    shown = f"a URL with the unsupported scheme {scheme}:" if scheme else f"{_clip_text(url)!r}, which is not a URL"
    raise InputError(field, f"expected {_accepted(limits)}, got {shown}")


def read_upload(stream: BinaryIO, limits: InputLimits, field: str) -> bytes:
    """Read an uploaded file (e.g. starlette's ``UploadFile.file``), stopping once it exceeds ``max_bytes``."""
    data = _read_limited(stream.read, limits, field, "the upload is")
    if not data:
        raise InputError(field, "the upload is empty")
    return data


def _read_limited(read: Callable[[int], bytes], limits: InputLimits, field: str, what: str) -> bytes:
    """Chunks from `read` until it is exhausted; InputTooLarge as soon as they pass ``max_bytes``."""
    chunks, total = [], 0
    while chunk := read(_CHUNK):
        total += len(chunk)
        if total > limits.max_bytes:
            raise _too_large(field, limits, what)
        chunks.append(chunk)
    return b"".join(chunks)


def _accepted(limits: InputLimits) -> str:
    return "a data: URL or an http(s) URL" if limits.allow_http else "a data: URL (data:<type>;base64,<data>)"


def _kind_of(value: object) -> str:
    return "an empty string" if isinstance(value, str) else type(value).__name__


def _clip_text(text: str, n: int = 40) -> str:
    return text if len(text) <= n else text[:n] + "..."


def _too_large(field: str, limits: InputLimits, what: str) -> InputTooLarge:
    return InputTooLarge(field, f"{what} larger than this server's limit of {_size(limits.max_bytes)}")


def _size(n: int) -> str:
    return f"{n / MiB:g} MiB" if n >= MiB else f"{n} bytes"


def _parse_data_url(url: str, limits: InputLimits, field: str) -> tuple[bytes, str | None]:
    """``data:[<media type>][;param=value]*[;base64],<data>`` (RFC 2397)."""
    header, comma, payload = url[len("data:") :].partition(",")
    if not comma:
        raise InputError(field, "malformed data: URL: expected data:<type>;base64,<data> but there is no ','")
    params = [p.strip() for p in header.split(";")]
    is_base64 = len(params) > 1 and params[-1].lower() == "base64"
    media_type = params[0].lower() or None
    if media_type is not None and not re.fullmatch(r"[a-z0-9][\w.+-]*/[\w.+-]+", media_type):
        raise InputError(field, f"malformed data: URL: {_clip_text(params[0])!r} is not a media type like image/png")
    if is_base64:
        if "%" in payload:
            payload = unquote(payload)
        if re.search(r"\s", payload):
            payload = re.sub(r"\s+", "", payload)
        # The decoded size is known from the length alone, so an oversized input is refused before decoding.
        if len(payload) * 3 // 4 - (len(payload) - len(payload.rstrip("="))) > limits.max_bytes:
            raise _too_large(field, limits, "the data: URL holds data")
        urlsafe = "-" in payload or "_" in payload
        try:
            if urlsafe and ("+" in payload or "/" in payload):
                raise ValueError("mixes the standard and URL-safe base64 alphabets")
            data = base64.b64decode(
                payload + "=" * (-len(payload) % 4), altchars=b"-_" if urlsafe else None, validate=True
            )
        except (binascii.Error, ValueError):
            raise InputError(field, "malformed data: URL: the data after ';base64,' is not valid base64") from None
    else:
        if len(payload) > 3 * limits.max_bytes:  # a byte takes at most three characters (%XX)
            raise _too_large(field, limits, "the data: URL holds data")
        data = unquote_to_bytes(payload)
    if len(data) > limits.max_bytes:
        raise _too_large(field, limits, "the data: URL holds data")
    if not data:
        raise InputError(field, "the data: URL holds no data")
    return data, media_type


# ---------------------------------------------------------------------------------------------------------------
# http(s), guarded against server-side request forgery

# Cloud instance metadata services, named so the refusal says what it protects (most are link-local anyway).
_METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in ("169.254.169.254", "169.254.170.2", "169.254.169.253", "100.100.100.200", "192.0.0.192", "fd00:ec2::254")
)
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")
# Names that only mean something inside a network; refused without asking DNS, so they do not leak there either.
_INTERNAL_NAMES = frozenset({"localhost", "metadata", "metadata.goog", "metadata.google.internal", "instance-data"})
_INTERNAL_SUFFIXES = (".localhost", ".internal", ".local", ".localdomain", ".home.arpa", ".lan", ".intranet")
_HOSTNAME = re.compile(r"[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class _Target:
    """One vetted hop: where to connect (``addresses``) and what to ask for (``host``, ``path``)."""

    scheme: str
    host: str
    port: int
    path: str
    addresses: tuple[IPAddress, ...]


def _fetch(url: str, limits: InputLimits, field: str) -> tuple[bytes, str | None]:
    deadline = time.monotonic() + limits.fetch_timeout
    what = "URL"
    for hop in range(limits.max_redirects + 1):
        target = _vet_url(url, limits, field, deadline, what)
        log.debug("fetching %s for %s (hop %d) via %s", _redact(url), field, hop, target.addresses[0])
        reply = _request(target, limits, field, deadline)
        if reply.location is None:
            if reply.status not in (200, 203):
                raise InputError(field, f"the server answered HTTP {reply.status} {reply.reason}".rstrip())
            return reply.body, reply.content_type
        url, what = urljoin(url, reply.location), "redirect"
    raise InputError(field, f"the URL redirects more than {limits.max_redirects} times; link to the media directly")


def check_url(url: str, limits: InputLimits, field: str) -> None:
    """Refuse, without connecting, a URL that `post_json` would refuse to reach (bad form, a scheme other
    than http(s), a host that does not resolve or resolves to a private address)."""
    if not isinstance(url, str) or not url.strip():
        raise InputError(field, f"expected an http(s) URL, got {_kind_of(url)}")
    _vet_url(url.strip(), limits, field, time.monotonic() + limits.fetch_timeout, "URL")


def post_json(url: str, payload: object, limits: InputLimits, field: str) -> int:
    """POST ``payload`` as JSON (a callback) under the same guard as fetches: public addresses only, the vetted
    address pinned, one deadline (``limits.fetch_timeout``). ``limits.allow_http`` is not consulted: sending is
    the caller's decision. Redirects are not followed. Returns the 2xx status; anything else is an InputError."""
    if not isinstance(url, str) or not url.strip():
        raise InputError(field, f"expected an http(s) URL, got {_kind_of(url)}")
    body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
    deadline = time.monotonic() + limits.fetch_timeout
    target = _vet_url(url.strip(), limits, field, deadline, "URL")
    log.debug("posting %d bytes to %s for %s via %s", len(body), _redact(url), field, target.addresses[0])
    reply = _request(target, limits, field, deadline, "POST", body, "application/json")
    if reply.location is not None:
        raise InputError(field, f"the URL redirects (HTTP {reply.status}); give the address it redirects to")
    if not 200 <= reply.status < 300:
        raise InputError(field, f"the server answered HTTP {reply.status} {reply.reason}".rstrip())
    return reply.status


def _redact(url: str) -> str:
    return _clip_text(url.split("?", 1)[0], 200)


def _vet_url(url: str, limits: InputLimits, field: str, deadline: float, what: str) -> _Target:
    """Parse and check a URL, resolve its host and vet every address; raise before anything is connected to."""
    if len(url) > _MAX_URL:
        raise InputError(field, f"the {what} is longer than {_MAX_URL} characters")
    if any(ord(c) <= 0x20 or ord(c) == 0x7F or c == "\\" for c in url):
        raise InputError(field, f"the {what} contains spaces, control characters or backslashes; percent-encode them")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as err:
        raise InputError(field, f"the {what} is malformed ({err})") from None
    if parts.scheme not in ("http", "https"):
        raise InputError(field, f"the {what} leads to a {parts.scheme or 'scheme-less'} URL; only http(s) is fetched")
    if "@" in parts.netloc:
        raise InputError(field, f"the {what} carries a user name or password (user@host); these are not accepted")
    if not parts.hostname:
        raise InputError(field, f"the {what} has no host")
    if port == 0:
        raise InputError(field, f"the {what} has port 0")
    host, literal = _parse_host(parts.hostname, "[" in parts.netloc, field, what)
    port = port or (443 if parts.scheme == "https" else 80)
    addresses = (literal,) if literal is not None else _resolve(host, port, limits, field, what, deadline)
    exempt = host in limits.allow_hosts
    for address in addresses:
        reason = None if exempt or str(address) in limits.allow_hosts else _refusal(address)
        if reason:
            shown = str(address) if literal is not None else f"{host!r}, which resolves to {address},"
            raise InputError(field, f"the {what} host {shown} is {reason}; only public addresses are fetched")
    # Non-ASCII is percent-encoded (http.client sends ASCII only); existing escapes are kept as they are.
    path = quote(urlunsplit(("", "", parts.path or "/", parts.query, "")), safe="!#$%&'()*+,/:;=?@[]~")
    return _Target(parts.scheme, host, port, path, addresses)


def _parse_host(host: str, bracketed: bool, field: str, what: str) -> tuple[str, IPAddress | None]:
    """The host as it goes in the Host header, and the address if it is a literal one."""
    if "%" in host:
        raise InputError(field, f"the {what} host {host!r} contains '%'; zone ids and escapes are not accepted")
    if bracketed:
        try:
            return host, ipaddress.IPv6Address(host)
        except ValueError:
            raise InputError(field, f"the {what} host [{host}] is not an IPv6 address") from None
    try:  # IDNA first: it folds look-alikes such as fullwidth digits into ASCII before anything is judged
        name = host.rstrip(".").encode("idna").decode("ascii").lower()
    except UnicodeError:
        raise InputError(field, f"the {what} host {host!r} is not a valid host name") from None
    # As browsers do: a host whose last label is a number is an IPv4 address. Only the canonical dotted-decimal
    # form is accepted, since the others (2130706433, 0x7f.1, 0177.0.0.1, 127.1) exist mainly to slip past filters.
    if re.fullmatch(r"\d+|0x[0-9a-f]*", name.rsplit(".", 1)[-1], re.ASCII):
        try:
            return name, ipaddress.IPv4Address(name)
        except ValueError:
            raise InputError(
                field,
                f"the {what} host {host!r} is an unusual numeric form; write an IPv4 address as four "
                "decimal numbers (like 93.184.216.34)",
            ) from None
    if not _HOSTNAME.fullmatch(name) or len(name) > 253:
        raise InputError(field, f"the {what} host {host!r} is not a valid host name")
    return name, None


def _resolve(
    host: str, port: int, limits: InputLimits, field: str, what: str, deadline: float
) -> tuple[IPAddress, ...]:
    if host not in limits.allow_hosts and (
        host in _INTERNAL_NAMES or host.endswith(_INTERNAL_SUFFIXES) or "." not in host
    ):
        raise InputError(field, f"the {what} host {host!r} is a local or internal name; only public hosts are fetched")
    found: dict[str, object] = {}

    def lookup() -> None:
        try:
            found["infos"] = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as err:
            found["error"] = err

    # getaddrinfo has no timeout of its own; a lookup left running past the deadline finishes in the background.
    thread = threading.Thread(target=lookup, name="openseedance-resolve", daemon=True)
    thread.start()
    thread.join(max(0.0, deadline - time.monotonic()))
    if thread.is_alive():
        raise InputError(field, f"looking up {host!r} took longer than {limits.fetch_timeout:g} s")
    if "error" in found:
        raise InputError(field, f"cannot find the {what} host {host!r} ({found['error']})")
    addresses: dict[IPAddress, None] = {}
    for family, _, _, _, sockaddr in found["infos"]:
        if family in (socket.AF_INET, socket.AF_INET6):
            addresses[ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])] = None
    if not addresses:
        raise InputError(field, f"the {what} host {host!r} has no IP address")
    return tuple(addresses)


def _refusal(address: IPAddress) -> str | None:
    """Why ``address`` must not be fetched from, or None for a public unicast address."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is None and 1 < int(address) <= 0xFFFFFFFF:  # IPv4-compatible ::a.b.c.d
            embedded = ipaddress.IPv4Address(int(address))
        if embedded is not None:
            inner = _refusal(embedded)
            return f"{inner} ({embedded} inside an IPv6 address)" if inner else None
        if address in _NAT64_LOCAL:
            return "a private address"
    if address in _METADATA_ADDRESSES:
        return "a cloud metadata address"
    checks = (
        (address.is_unspecified, "the unspecified address"),
        (address.is_loopback, "a loopback address"),
        (address.is_link_local, "a link-local address"),
        (address.is_multicast, "a multicast address"),
        (isinstance(address, ipaddress.IPv4Address) and address in _CGNAT, "a carrier-grade NAT address"),
        (address.is_reserved, "a reserved address"),
        (address.is_private, "a private address"),
        (not address.is_global, "not a public address"),
    )
    return next((reason for refused, reason in checks if refused), None)


@functools.cache
def _tls_context() -> ssl.SSLContext:
    return ssl.create_default_context()


def _open_socket(address: IPAddress, port: int, timeout: float) -> socket.socket:
    """Connect to exactly this address: no name resolution happens here."""
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect((str(address), port))
    except BaseException:
        sock.close()
        raise
    return sock


class _PinnedConnection(http.client.HTTPConnection):
    """Talks to a vetted address while the Host header and TLS server name still carry the host's name."""

    def __init__(self, target: _Target, timeout: float) -> None:
        super().__init__(target.host, target.port, timeout=timeout)
        self.default_port = 443 if target.scheme == "https" else 80  # keeps ":443" out of the Host header
        self.target = target
        self.aborted = False
        self.pinned_sock: socket.socket | None = None  # http.client drops self.sock once a response owns it

    def connect(self) -> None:
        error: OSError | None = None
        for address in self.target.addresses:
            try:
                sock = _open_socket(address, self.port, self.timeout)
                break
            except OSError as err:
                error = err
        else:
            raise error or OSError("no address to connect to")
        if self.target.scheme == "https":
            sock = _tls_context().wrap_socket(sock, server_hostname=self.host)
        self.sock = self.pinned_sock = sock

    def abort(self) -> None:
        """Called from a timer thread at the deadline: wakes up whatever read or write is blocked."""
        self.aborted = True
        if self.pinned_sock is not None:
            with suppress(OSError):
                self.pinned_sock.shutdown(socket.SHUT_RDWR)


@dataclass(frozen=True)
class _Reply:
    status: int
    reason: str
    location: str | None  # set for a redirect, whose body is not read
    content_type: str | None
    body: bytes


def _request(
    target: _Target,
    limits: InputLimits,
    field: str,
    deadline: float,
    method: str = "GET",
    body: bytes | None = None,
    content_type: str | None = None,
) -> _Reply:
    """One request to one vetted hop; the answer's body is read (up to ``max_bytes``) unless it redirects."""
    remaining = deadline - time.monotonic()
    timed_out = InputError(field, f"the request to the URL took longer than {limits.fetch_timeout:g} s")
    if remaining <= 0:
        raise timed_out
    conn, response = _PinnedConnection(target, timeout=remaining), None
    # Per-operation socket timeouts do not bound a server that trickles a byte at a time; this does.
    watchdog = threading.Timer(remaining, conn.abort)
    watchdog.daemon = True
    watchdog.start()
    headers = {"User-Agent": _USER_AGENT, "Accept": "*/*", "Connection": "close"}
    if content_type is not None:
        headers["Content-Type"] = content_type
    try:
        conn.request(method, target.path, body=body, headers=headers)
        response = conn.getresponse()
        if response.status in _REDIRECTS:
            location = (response.getheader("Location") or "").strip()
            if not location:
                raise InputError(field, f"the server answered HTTP {response.status} without saying where to go")
            return _Reply(response.status, response.reason, location, None, b"")
        declared = _content_length(response)
        if declared is not None and declared > limits.max_bytes:
            raise _too_large(field, limits, "the response is")
        data = _read_capped(response, limits, field)
        if conn.aborted:
            raise timed_out
        if declared is not None and len(data) < declared:
            raise InputError(field, f"the server closed the connection after {len(data)} of {declared} bytes")
        media_type = (response.getheader("Content-Type") or "").split(";", 1)[0].strip().lower() or None
        return _Reply(response.status, response.reason, None, media_type, data)
    except InputError:
        raise
    except ssl.SSLCertVerificationError as err:
        raise InputError(field, f"the TLS certificate of {target.host} is not valid ({err.verify_message})") from None
    except (OSError, http.client.HTTPException, ValueError) as err:
        if conn.aborted or isinstance(err, TimeoutError):
            raise timed_out from None
        raise InputError(field, f"cannot reach {target.host} ({type(err).__name__}: {err})") from None
    finally:
        watchdog.cancel()
        if response is not None:
            response.close()
        conn.close()
        if conn.pinned_sock is not None:
            conn.pinned_sock.close()


def _content_length(response: http.client.HTTPResponse) -> int | None:
    value = response.getheader("Content-Length")
    return int(value) if value and value.strip().isdigit() else None


def _read_capped(response: http.client.HTTPResponse, limits: InputLimits, field: str) -> bytes:
    # read1 returns after one socket read, so the deadline watchdog can interrupt a slow body between chunks.
    return _read_limited(response.read1, limits, field, "the response is")


# ---------------------------------------------------------------------------------------------------------------
# Decoding


@dataclass(frozen=True)
class _Format:
    suffix: str  # what media.read_* goes by
    label: str  # for messages: "got a PNG image"
    kinds: frozenset[str]


def _format(suffix: str, label: str, *kinds: str) -> _Format:
    return _Format(suffix, label, frozenset(kinds))


_EXPECTED = {
    "image": "an image (PNG, JPEG, WebP, BMP or GIF)",
    "video": "a video (MP4, MOV, WebM, MKV, AVI or GIF)",
    "audio": "audio (WAV, FLAC, OGG, MP3, M4A, or a video with sound)",
}
_AUDIO_BRANDS = (b"M4A ", b"M4B ", b"M4P ", b"F4A ")
_IMAGE_BRANDS = (b"heic", b"heix", b"heim", b"heis", b"mif1", b"msf1", b"avif", b"avis")


def _sniff(data: bytes) -> _Format | None:
    """The format the bytes are in, by their first bytes."""
    head = bytes(data[:64])
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return _format(".png", "a PNG image", "image")
    if head.startswith(b"\xff\xd8\xff"):
        return _format(".jpg", "a JPEG image", "image")
    if head.startswith((b"GIF87a", b"GIF89a")):
        return _format(".gif", "a GIF", "image", "video")
    if head.startswith(b"BM") and len(head) >= 26:
        return _format(".bmp", "a BMP image", "image")
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return _format(".webp", "a WebP image", "image")
    if head.startswith(b"RIFF") and head[8:12] == b"WAVE":
        return _format(".wav", "a WAV audio file", "audio")
    if head.startswith(b"RIFF") and head[8:12] == b"AVI ":
        return _format(".avi", "an AVI file", "video", "audio")
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in _AUDIO_BRANDS:
            return _format(".m4a", "an M4A audio file", "audio")
        if brand in _IMAGE_BRANDS:
            return _format(".heic", "a HEIC/AVIF image (not supported; convert it to PNG or JPEG)")
        if brand == b"qt  ":
            return _format(".mov", "a QuickTime (MOV) file", "video", "audio")
        return _format(".mp4", "an MP4 file", "video", "audio")
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        if b"webm" in head:
            return _format(".webm", "a WebM file", "video", "audio")
        return _format(".mkv", "a Matroska (MKV) file", "video", "audio")
    if head.startswith(b"fLaC"):
        return _format(".flac", "a FLAC audio file", "audio")
    if head.startswith(b"OggS"):
        return _format(".ogg", "an Ogg audio file", "audio")
    # MPEG audio: an ID3 tag, or a frame header (11 sync bits, then a layer other than the reserved 00).
    if head.startswith(b"ID3") or (len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0 and head[1] & 0x06):
        return _format(".mp3", "an MP3 audio file", "audio")
    return None


def decode_image(data: bytes, limits: InputLimits, field: str) -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB from PNG, JPEG, WebP, BMP or GIF (its first frame) bytes."""
    fmt = _expect(data, "image", limits, field)
    with _decoding(field, fmt, "image") as path:
        with Image.open(io.BytesIO(data)) as img:  # reads the header only
            width, height = img.size
        _check_pixels(width, height, limits, field, "image")
        path.write_bytes(data)
        return media.read_image(path)


def decode_video(
    data: bytes,
    limits: InputLimits,
    field: str,
    *,
    fps: float | None = None,
    size: tuple[int, int] | None = None,
    sample_rate: int | None = None,
    channels: int | None = None,
    need_audio: bool = False,
) -> media.Clip:
    """A :class:`media.Clip` from MP4, MOV, WebM, MKV, AVI or GIF bytes; the keywords go to ``media.read_video``
    (pass ``fps`` and ``size`` to decode straight to what the model needs and keep memory small)."""
    fmt = _expect(data, "video", limits, field)
    with _decoding(field, fmt, "video") as path:
        path.write_bytes(data)
        probe = _probe(path, cap=limits.max_video_seconds + _SLACK)
        if probe.video_seconds is None:
            raise InputError(field, f"expected a video, but {fmt.label} has no video stream")
        _check_pixels(probe.width, probe.height, limits, field, "video frame")
        if probe.cut_short:  # either stream may be the long one
            longest = max(probe.video_seconds, probe.audio_seconds or 0.0)
            _check_seconds(longest, limits.max_video_seconds, field, "video", at_least=True)
        _check_seconds(probe.video_seconds, limits.max_video_seconds, field, "video")
        if probe.audio_seconds is not None:
            _check_seconds(probe.audio_seconds, limits.max_video_seconds, field, "video's sound track")
        if probe.video_packets > (limits.max_video_seconds + _SLACK) * MAX_FPS:
            raise InputError(field, f"the video has {probe.video_packets} frames, more than {MAX_FPS:g} per second")
        if fps is None and probe.frame_rate > MAX_FPS:
            raise InputError(field, f"the video's frame rate {probe.frame_rate:g} is over {MAX_FPS:g} fps")
        clip = media.read_video(
            path, fps=fps, size=size, sample_rate=sample_rate, channels=channels, need_audio=need_audio
        )
        _check_seconds(clip.duration, limits.max_video_seconds, field, "video")
        if size is None:
            _check_pixels(clip.video.shape[2], clip.video.shape[1], limits, field, "video frame")
        return clip


def decode_audio(
    data: bytes, limits: InputLimits, field: str, *, sample_rate: int | None = None, channels: int | None = None
) -> tuple[np.ndarray, int]:
    """``(audio (C, S) float32, rate)`` from WAV, FLAC, OGG, MP3 or M4A bytes, or a video's sound track."""
    fmt = _expect(data, "audio", limits, field)
    with _decoding(field, fmt, "audio") as path:
        path.write_bytes(data)
        probe = _probe(path, cap=limits.max_audio_seconds + _SLACK, with_video=False)
        if probe.audio_seconds is None:
            raise InputError(field, f"expected audio, but {fmt.label} has no sound track")
        _check_seconds(probe.audio_seconds, limits.max_audio_seconds, field, "audio", at_least=probe.cut_short)
        if fmt.suffix in (".wav", ".flac", ".ogg"):  # read by soundfile, which goes by the header's length
            info = sf.info(str(path))
            _check_seconds(info.frames / info.samplerate, limits.max_audio_seconds, field, "audio")
        audio, rate = media.read_audio(path, sample_rate=sample_rate, channels=channels)
        _check_seconds(audio.shape[1] / rate, limits.max_audio_seconds, field, "audio")
        return audio, rate


def load_image(url: str, limits: InputLimits, field: str) -> np.ndarray:
    """:func:`load_bytes` then :func:`decode_image`."""
    return decode_image(load_bytes(url, limits, field)[0], limits, field)


def load_video(url: str, limits: InputLimits, field: str, **read_kwargs: object) -> media.Clip:
    """:func:`load_bytes` then :func:`decode_video`."""
    return decode_video(load_bytes(url, limits, field)[0], limits, field, **read_kwargs)


def load_audio(url: str, limits: InputLimits, field: str, **read_kwargs: object) -> tuple[np.ndarray, int]:
    """:func:`load_bytes` then :func:`decode_audio`."""
    return decode_audio(load_bytes(url, limits, field)[0], limits, field, **read_kwargs)


def _expect(data: bytes, kind: str, limits: InputLimits, field: str) -> _Format:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise InputError(field, f"expected {_EXPECTED[kind]} as bytes, got {type(data).__name__}")
    if len(data) > limits.max_bytes:
        raise _too_large(field, limits, f"the {kind} is")
    if not len(data):
        raise InputError(field, f"expected {_EXPECTED[kind]}, got no data")
    fmt = _sniff(data)
    if fmt is None:
        raise InputError(field, f"expected {_EXPECTED[kind]}, but the data is not in a media format this server reads")
    if kind not in fmt.kinds:
        raise InputError(field, f"expected {_EXPECTED[kind]}, got {fmt.label}")
    return fmt


@contextmanager
def _decoding(field: str, fmt: _Format, kind: str) -> Iterator[Path]:
    """A temporary path to write the bytes to; any failure inside becomes an InputError naming ``field``."""
    with tempfile.TemporaryDirectory(prefix="openseedance-input-") as folder:
        path = Path(folder) / f"input{fmt.suffix}"
        try:
            yield path
        except InputError:
            raise
        except Exception as err:  # untrusted bytes reach C decoders: whatever they raise is the input's fault
            log.debug("cannot decode %s for %s", fmt.label, field, exc_info=True)
            raise InputError(field, f"cannot read {fmt.label} ({_reason(err, path)}); send {_EXPECTED[kind]}") from None


def _reason(err: BaseException, path: Path) -> str:
    """The decoder's complaint without our temporary path, FFmpeg's error numbers or Python object reprs."""
    text = str(err).replace(f"{path}: ", "").replace(f": '{path}'", "").replace(str(path), "the file")
    text = re.sub(r"\[Errno -?\d+\] |\s*<[\w.]+ object at 0x[0-9a-f]+>|\s+", " ", text).strip(" .:")
    return text or type(err).__name__


@dataclass
class _Probe:
    width: int = 0
    height: int = 0
    frame_rate: float = 0.0
    video_seconds: float | None = None  # None: no such stream
    audio_seconds: float | None = None
    video_packets: int = 0
    cut_short: bool = False  # demuxing stopped at the cap: the durations are lower bounds


def _probe(path: Path, cap: float, with_video: bool = True) -> _Probe:
    """Frame size, rate and stream durations from packet timestamps, demuxed without decoding (cheap even
    for a long file, and not fooled by a header that understates the duration). Stops once a stream
    passes ``cap`` seconds: that alone is enough to refuse the file."""
    probe = _Probe()
    with av.open(str(path), "r", metadata_errors="replace") as container:
        video = container.streams.video[0] if container.streams.video and with_video else None
        audio = container.streams.audio[0] if container.streams.audio else None
        if video is not None:
            probe.width, probe.height = video.codec_context.width, video.codec_context.height
            rate = video.average_rate or video.guessed_rate
            probe.frame_rate = float(rate) if rate else 0.0
        spans: dict[int, list[float]] = {}
        for packet in container.demux([s for s in (video, audio) if s is not None]):
            if packet.pts is None or packet.time_base is None:
                continue
            start = float(packet.pts * packet.time_base)
            end = start + float((packet.duration or 0) * packet.time_base)
            span = spans.setdefault(packet.stream.index, [start, end])
            span[0], span[1] = min(span[0], start), max(span[1], end)
            if packet.stream is video:
                probe.video_packets += 1
            if span[1] - span[0] > cap or probe.video_packets > cap * MAX_FPS:
                probe.cut_short = True
                break
        # Read while the container is open: its streams are not to be touched after close.
        if video is not None:
            probe.video_seconds = _span(spans.get(video.index))
        if audio is not None:
            probe.audio_seconds = _span(spans.get(audio.index))
    return probe


def _span(span: list[float] | None) -> float:
    return 0.0 if span is None else span[1] - span[0]


def _check_seconds(seconds: float, limit: float, field: str, what: str, at_least: bool = False) -> None:
    if seconds > limit + _SLACK:
        lasts = f"{'over ' if at_least else ''}{seconds:.1f} s"
        raise InputError(field, f"the {what} lasts {lasts}, longer than this server's limit of {limit:g} s")


def _check_pixels(width: int, height: int, limits: InputLimits, field: str, what: str) -> None:
    if width * height > limits.max_pixels:
        raise InputError(
            field,
            f"the {what} is {width}x{height} = {width * height} pixels, over this server's limit of "
            f"{limits.max_pixels} pixels; scale it down",
        )
