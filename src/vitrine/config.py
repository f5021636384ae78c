"""Settings, read from the environment (prefix ``VITRINE_``) and passed explicitly."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic_settings import BaseSettings, SettingsConfigDict

ResizePolicy = Literal["pad", "crop", "squash"]


class Settings(BaseSettings):
    """Every tunable of Vitrine. Command-line flags override these values."""

    model_config = SettingsConfigDict(env_prefix="VITRINE_", extra="ignore")

    # Model
    backbone: str = "mobilenet_v2"
    weights: Path | None = None
    """Local weights file (torchvision state_dict); None means torchvision's download."""
    resize: ResizePolicy = "crop"
    """How a photo becomes a square input. Measured (benchmarks/retrieval_quality.py, 3 seeds):
    category P@5 crop 0.887, squash 0.885, pad 0.880; on 60×80 photos 0.824 / 0.807 / 0.798."""
    device: str = "cpu"
    threads: int = 0
    """Torch intra-op threads; 0 leaves torch's default (one per core)."""

    # Embedding pipeline
    batch_size: int = 8
    """Images per forward pass; small batches measured fastest on CPU (cache-bound)."""
    decode_workers: int = 2
    max_image_pixels: int = 40_000_000
    """Images with more pixels are refused before decoding (decompression-bomb guard)."""

    # Duplicates
    dup_phash_distance: int = 6
    """Hamming distance (of 64 bits) at or below which two perceptual hashes agree."""
    dup_thumb_cosine: float = 0.99
    """Cosine similarity of 16×16 colour thumbnails for a (resized/recompressed) duplicate."""
    dup_max_colour_diff: float = 12.0
    """Largest mean colour difference (0–255) of those thumbnails' non-white pixels."""
    dup_embed_cosine: float = 0.97
    """CNN-embedding cosine similarity for a near-identical duplicate."""

    # Web app and REST API
    api_key: str | None = None
    """Bearer key for the endpoints that change the store; None refuses them (403)."""
    max_upload_bytes: int = 10_000_000
    """Uploaded photos larger than this are refused (413)."""
    cors_origins: list[str] = []
    """Origins allowed to call the API from a browser; empty keeps CORS closed."""

    # Demo
    demo_catalog: Path | None = None
    demo_store: Path = Path("demo-output/store")
    demo_out: Path = Path("demo-output")
