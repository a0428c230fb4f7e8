"""TEST SERVER ONLY: a local stand-in for Google's FCM HTTP v1 API and its OAuth token endpoint.

It records every message it accepts and fails chosen tokens the way FCM does, so the sender's
handling of dead tokens and throttling is exercised over real HTTP. Never a production path.
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


@dataclass
class FakeFcmState:
    received: list[dict] = field(default_factory=list)
    # token -> "unregistered" | "bad_token" | "429:<seconds>" | "500"; "429"/"500" fail once
    failures: dict[str, str] = field(default_factory=dict)
    tokens: set[str] = field(default_factory=set)
    attempts: dict[str, int] = field(default_factory=dict)
    delay: float = 0.0  # seconds every send waits before its answer (a congested service)


def _error(status: int, code: str, message: str, extra: dict | None = None) -> JSONResponse:
    body = {"error": {"code": status, "message": message, "status": code}}
    if code == "UNREGISTERED":
        body["error"]["details"] = [
            {
                "@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
                "errorCode": "UNREGISTERED",
            }
        ]
    return JSONResponse(body, status_code=status, headers=extra)


def create_app(state: FakeFcmState) -> Starlette:
    async def token(request: Request) -> JSONResponse:
        form = dict(parse_qsl((await request.body()).decode()))
        if form.get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer":
            return JSONResponse({"error": "unsupported_grant_type"}, status_code=400)
        access = secrets.token_urlsafe(24)
        state.tokens.add(access)
        return JSONResponse({"access_token": access, "expires_in": 3600, "token_type": "Bearer"})

    async def send(request: Request) -> JSONResponse:
        auth = request.headers.get("authorization", "")
        if auth.removeprefix("Bearer ") not in state.tokens:
            return _error(401, "UNAUTHENTICATED", "missing or unknown bearer token")
        body = await request.json()
        if state.delay:
            await asyncio.sleep(state.delay)
        device = body.get("message", {}).get("token", "")
        state.attempts[device] = state.attempts.get(device, 0) + 1
        mode = state.failures.get(device)
        if mode == "unregistered":
            return _error(404, "UNREGISTERED", "Requested entity was not found.")
        if mode == "bad_token":
            return _error(
                400,
                "INVALID_ARGUMENT",
                "The registration token is not a valid FCM registration token",
            )
        if mode and mode.startswith("429"):
            state.failures.pop(device)
            wait = mode.partition(":")[2] or "1"
            return _error(429, "QUOTA_EXCEEDED", "quota", {"Retry-After": wait})
        if mode == "500":
            state.failures.pop(device)
            return _error(500, "INTERNAL", "internal")
        state.received.append(body["message"])
        project = request.path_params["project"]
        return JSONResponse({"name": f"projects/{project}/messages/{len(state.received)}"})

    return Starlette(
        routes=[
            Route("/token", token, methods=["POST"]),
            Route("/v1/projects/{project}/messages:send", send, methods=["POST"]),
        ]
    )
