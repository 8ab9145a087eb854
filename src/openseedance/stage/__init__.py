"""The Stage: a procedural audio-visual world for training data, test fixtures and measurement."""

from openseedance.stage.captions import Captions, caption
from openseedance.stage.probes import PROBES, Report, as_clip, probe
from openseedance.stage.render import RenderConfig, Rendering, Truth, render
from openseedance.stage.scene import Action, Character, Identity, Scene, Shot, Voice, sample_scene

__all__ = [
    "PROBES",
    "Action",
    "Captions",
    "Character",
    "Identity",
    "RenderConfig",
    "Rendering",
    "Report",
    "Scene",
    "Shot",
    "Truth",
    "Voice",
    "as_clip",
    "caption",
    "probe",
    "render",
    "sample_scene",
]
