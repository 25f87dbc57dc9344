"""RFC 9457 problem details: every API error has a type, title, status, detail and a stable code."""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse

PROBLEM_TYPE_BASE = "https://syncline.dev/problems/"


def problem(status: int, title: str, detail: str, code: str, **extra: Any) -> JSONResponse:
    """Return an ``application/problem+json`` response."""
    body = {"type": PROBLEM_TYPE_BASE + code, "title": title, "status": status, "detail": detail, "code": code,
            **extra}
    return JSONResponse(body, status_code=status, media_type="application/problem+json")
