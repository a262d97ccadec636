"""Typed application state, shared through ``web.AppKey`` constants (never string keys)."""

from __future__ import annotations

import asyncio

import aiohttp
from aiohttp import web

from .config import Settings
from .headers import HeaderPolicy
from .identity_middleware import IdentityMiddleware
from .login_state import LoginStates
from .oidc import OidcClient
from .session_manager import SessionManager
from .upstream_client import UpstreamClient

SETTINGS = web.AppKey("settings", Settings)
OIDC = web.AppKey("oidc", OidcClient)
SESSIONS = web.AppKey("sessions", SessionManager)
LOGINS = web.AppKey("logins", LoginStates)
UPSTREAM_HTTP = web.AppKey("upstream_http", aiohttp.ClientSession)  # WebSockets only
UPSTREAM_CLIENT = web.AppKey("upstream_client", UpstreamClient)  # every other proxied request
HEADERS = web.AppKey("headers", HeaderPolicy)
IDENTIFY = web.AppKey("identify", IdentityMiddleware)
OPEN_WEBSOCKETS = web.AppKey("open_websockets", set[asyncio.Event])  # one event per relay; set on shutdown
