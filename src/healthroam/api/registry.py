"""Registry steward routes (/registry): being built for the Registry issue."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/registry", tags=["registry"])
