"""Typed application state, shared through ``web.AppKey`` constants (never string keys)."""

from __future__ import annotations

import aiohttp
from aiohttp import web

from .config import Settings
from .idp_client import IdpClient
from .login import LoginStates
from .provider import Provider
from .sessions import SessionManager
from .tokens import TokenVerifier

SETTINGS = web.AppKey("settings", Settings)
SESSIONS = web.AppKey("sessions", SessionManager)
LOGINS = web.AppKey("logins", LoginStates)
VERIFIER = web.AppKey("verifier", TokenVerifier)
PROVIDER = web.AppKey("provider", Provider)
IDP = web.AppKey("idp", IdpClient)
UPSTREAM_HTTP = web.AppKey("upstream_http", aiohttp.ClientSession)
