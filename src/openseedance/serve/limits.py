"""What the server accepts as a request input: the limits on size, length and fetching, and the error that
names the field at fault."""

from __future__ import annotations

from dataclasses import dataclass

MiB = 1 << 20


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
    # Decoded media one request may hold, at the size and frame rate the model uses (frames as uint8 RGB,
    # sound as float32); checked from the containers before decoding and again while decoding.
    max_decoded_bytes: int = 256 * MiB
    allow_http: bool = False  # off by default: fetching makes the server a client of any host a user names
    fetch_timeout: float = 10.0  # seconds for a whole fetch, name lookups and redirects included
    max_redirects: int = 3
    # Host names or IP addresses exempt from the private-address refusal. Meant for tests against a local
    # server: every user of a server can reach what is listed here.
    allow_hosts: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        object.__setattr__(self, "allow_hosts", frozenset(h.lower().strip("[]") for h in self.allow_hosts))
        positive = ("max_bytes", "max_video_seconds", "max_audio_seconds", "max_pixels", "max_decoded_bytes")
        for name in (*positive, "fetch_timeout"):
            if not getattr(self, name) > 0:
                raise ValueError(f"InputLimits.{name} must be positive, got {getattr(self, name)!r}")
        if self.max_redirects < 0:
            raise ValueError(f"InputLimits.max_redirects must be 0 or more, got {self.max_redirects!r}")


def too_large(field: str, limits: InputLimits, what: str) -> InputTooLarge:
    return InputTooLarge(field, f"{what} larger than this server's limit of {_size(limits.max_bytes)}")


def _size(n: int) -> str:
    return f"{n / MiB:g} MiB" if n >= MiB else f"{n} bytes"
