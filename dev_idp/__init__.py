"""dev_idp: a local identity provider that behaves like an Amazon Cognito user pool.

It plays both parts of a pool on one origin: the *issuer* (``{public_url}/{pool_id}`` with its discovery document
and JWKS) and the pool's *domain* (``/oauth2/authorize``, ``/oauth2/token``, ``/oauth2/userInfo``,
``/oauth2/revoke``, ``/logout`` and the hosted-UI pages ``/login``, ``/signup``, ``/confirm``, ``/error``).

It exists so that the demo and the test suite run without an AWS account. Everything a browser or a relying party
can observe follows Cognito (token shapes, error bodies and status codes, the one-hour hosted-UI session, logout's
non-standard parameters); everything else is as small as it can be. State lives in memory. It is a development tool
and never serves production: it says so when it starts.
"""

__version__ = "0.1.0"
