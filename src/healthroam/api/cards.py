"""Health card routes (/cards): being built for the Health card issue."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/cards", tags=["cards"])
