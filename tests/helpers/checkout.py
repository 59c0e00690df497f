"""The checkout under test: children run in it, and tests read its shipped files from it."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
