"""cognito-gateway: an authenticating reverse proxy for Amazon Cognito user pools.

Request flow (``app.create_app`` wires it):

1. ``middleware.error_middleware`` turns every failure into one clear answer (HTML for browsers, JSON otherwise).
2. The gateway's own endpoints (``auth``, ``health``): the callback, ``/oauth2/sign_in``, ``/oauth2/sign_out``,
   ``/oauth2/userinfo``, ``/oauth2/healthz``, ``/oauth2/readyz``.
3. Everything else goes to ``proxy.proxy``: ``sessions.SessionManager`` loads the session from its store
   (``cookie_store`` or ``redis_store``) and refreshes it when due; without one, a navigation is sent to sign in
   (``login``: state, nonce, PKCE) and anything else gets a 401; with one, the request is streamed upstream with
   identity headers (``headers``).
4. ``on_response_prepare`` writes session changes into every response, streamed ones included.

Trust boundaries: the client controls every header, cookie, path and query string, so identity and forwarding
headers are stripped before the gateway sets its own, redirect targets are validated (``redirects``), and the
redirect URI comes from configuration only. The IdP is trusted only through what can be verified: its tokens are
checked against its JWKS with algorithms from configuration (``tokens``, ``jwks``). The upstream is trusted to
answer, never to decide who the user is; its cookies never enter a shared jar.
"""

__version__ = "0.1.0"
