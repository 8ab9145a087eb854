"""The bytes a request input refers to — data: URLs, uploads, and http(s) URLs where enabled — read under a cap.

Nothing a client sends is trusted: bytes are counted as they arrive and refused past ``InputLimits.max_bytes``,
and every failure becomes an :class:`InputError` that names the request field and says what was expected.

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
import ipaddress
import json
import logging
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from typing import BinaryIO
from urllib.parse import quote, unquote, unquote_to_bytes, urljoin, urlsplit, urlunsplit

from openseedance.serve.limits import InputError, InputLimits, too_large

__all__ = ["check_url", "load_bytes", "post_json", "read_upload"]

log = logging.getLogger(__name__)

_CHUNK = 64 * 1024
_MAX_URL = 8192
_REDIRECTS = (301, 302, 303, 307, 308)
_USER_AGENT = "openseedance-server"


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
            raise too_large(field, limits, what)
        chunks.append(chunk)
    return b"".join(chunks)


def _accepted(limits: InputLimits) -> str:
    return "a data: URL or an http(s) URL" if limits.allow_http else "a data: URL (data:<type>;base64,<data>)"


def _kind_of(value: object) -> str:
    return "an empty string" if isinstance(value, str) else type(value).__name__


def _clip_text(text: str, n: int = 40) -> str:
    return text if len(text) <= n else text[:n] + "..."



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
            raise too_large(field, limits, "the data: URL holds data")
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
            raise too_large(field, limits, "the data: URL holds data")
        data = unquote_to_bytes(payload)
    if len(data) > limits.max_bytes:
        raise too_large(field, limits, "the data: URL holds data")
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
            raise too_large(field, limits, "the response is")
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
