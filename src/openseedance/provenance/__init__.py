"""Provenance: every generated clip is marked, signed and verifiable; real faces are not taken as references.

    frames = embed_video(frames, payload)          # invisible, in the luma of every frame
    audio = embed_audio(audio, 16000, payload)     # invisible, in 300-3800 Hz
    sign_file("clip.mp4", claims)                  # C2PA manifest (or signed metadata)
    report = verify("clip.mp4")                    # marks, payload, confidence, manifest

    payload.py      what the marks carry (32 bits, CRC-8, convolutional code) and what both detectors share
    video_mark.py   the invisible video mark and the visible label
    audio_mark.py   the invisible audio mark
    manifest.py     the claims, signed as C2PA or as signed metadata, and the signing key
    verify.py       read a file's marks and manifest into one report
    faces.py        the guard that refuses references showing a real human face

The key is public: the marks tell honest tools that a clip is generated; they are not a secret that
stops a determined forger from removing them.
"""

from openseedance.media import Clip
from openseedance.provenance.audio_mark import _audio_basis, detect_audio, embed_audio
from openseedance.provenance.faces import FaceError, check_references, find_faces, video_shows_face
from openseedance.provenance.manifest import ManifestResult, claims, read_manifest, sign_file
from openseedance.provenance.payload import ALPHA, CODE_BITS, MarkResult, Payload, decode_payload, encode_payload
from openseedance.provenance.verify import Verification, verify
from openseedance.provenance.video_mark import _video_basis, detect_video, embed_video, visible_mark

__all__ = [
    "ALPHA",
    "CODE_BITS",
    "FaceError",
    "ManifestResult",
    "MarkResult",
    "Payload",
    "Verification",
    "check_references",
    "claims",
    "decode_payload",
    "detect_audio",
    "detect_video",
    "embed_audio",
    "embed_video",
    "encode_payload",
    "find_faces",
    "mark_clip",
    "prepare",
    "read_manifest",
    "sign_file",
    "verify",
    "video_shows_face",
    "visible_mark",
]


def mark_clip(clip: Clip, payload: Payload) -> Clip:
    """The clip with the invisible video and audio marks."""
    video = None if clip.video is None else embed_video(clip.video, payload)
    audio = None if clip.audio is None else embed_audio(clip.audio, clip.sample_rate, payload)
    return Clip(video=video, audio=audio, fps=clip.fps, sample_rate=clip.sample_rate)


def prepare() -> None:
    """Make the marks' keyed patterns now (about half a second, once per process) rather than while
    the first clip waits: a server's workers and a live stream call it before their first request."""
    _video_basis()
    _audio_basis()
