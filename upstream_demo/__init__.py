"""upstream_demo: the small Flask app that cognito-gateway protects in the demo and the tests.

It believes the identity headers it receives, as an app behind an authenticating proxy does. That is only safe when
the gateway is the one way to reach it: never publish its port (docker-compose.yml does not).
"""

__version__ = "0.1.0"
