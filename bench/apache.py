"""Apache 2.4 + mod_auth_openidc (Debian's packages) configured like the gateway, against dev_idp.

"Like the gateway" means, directive by directive:

- the same client, scopes (``openid email profile``), PKCE S256 and authorization-code flow against the same IdP
  discovery document, with the callback on the proxy's own origin;
- sessions in a client-side encrypted cookie (``client-cookie``), as the gateway's cookie store;
- the gateway's session limits: 2 h idle (``GATEWAY_SESSION_IDLE_TIMEOUT``), 12 h in all
  (``GATEWAY_SESSION_LIFETIME``); mod_auth_openidc's own 5-minute idle default would end a session mid-bench;
- identity passed to the upstream as headers, its session cookie stripped before the upstream (the gateway does
  both);
- the MPM as Debian ships it (event, ``mpm_event.conf``), keep-alive without a per-connection request cap
  (aiohttp has none, so Apache's default of 100 would make it alone pay for reconnects), no access log, errors
  at ``warn``.

mod_auth_openidc reuses backend connections (mod_proxy's pool) by default; nothing else is tuned.

One difference stays by default: at sign-in mod_auth_openidc also calls the userinfo endpoint the discovery
document names, while the gateway calls it only when the ID token lacks claims (dev_idp's never does).
``--apache-no-userinfo`` points it at the same discovery document minus that endpoint, so both make exactly the
same IdP calls.
"""

from __future__ import annotations

import json
import secrets
import urllib.request
from pathlib import Path

from procs import Child

MODULES = Path("/usr/lib/apache2/modules")
# authz_user provides `Require valid-user`; unixd (User/Group) and log_config are compiled into Debian's apache2.
LOADED = ("mpm_event", "authn_core", "authz_core", "authz_user", "auth_openidc", "proxy", "proxy_http")
CALLBACK_PATH = "/cognito_redirect"
SESSION_COOKIES = " ".join(
    ["mod_auth_openidc_session", "mod_auth_openidc_session_chunks"]
    + [f"mod_auth_openidc_session_{index}" for index in range(8)]
)


def callback_url(port: int) -> str:
    return f"http://127.0.0.1:{port}{CALLBACK_PATH}"


def metadata_without_userinfo(issuer: str, path: Path) -> Path:
    """dev_idp's discovery document minus ``userinfo_endpoint``, written where nginx serves it.

    mod_auth_openidc 2.4.12 refuses http endpoints configured by hand (only discovery may use http), so the
    by-hand variant is a discovery document of our own rather than ``OIDCProvider*Endpoint`` directives.
    """
    with urllib.request.urlopen(f"{issuer}/.well-known/openid-configuration", timeout=10) as answer:
        metadata = json.load(answer)
    metadata.pop("userinfo_endpoint", None)
    path.write_text(json.dumps(metadata))
    path.chmod(0o644)
    return path


def config(workdir: Path, port: int, upstream_port: int, metadata_url: str, client_secret: str) -> str:
    modules = "\n".join(f"LoadModule {name}_module {MODULES}/mod_{name}.so" for name in LOADED)
    return f"""ServerRoot {workdir}
DefaultRuntimeDir {workdir}
PidFile {workdir}/apache2.pid
Mutex file:{workdir} default
ErrorLog {workdir}/apache-error.log
LogLevel warn
{modules}
User www-data
Group www-data
ServerName 127.0.0.1
Listen 127.0.0.1:{port}
Timeout 300
KeepAlive On
MaxKeepAliveRequests 0
KeepAliveTimeout 5
StartServers 2
MinSpareThreads 25
MaxSpareThreads 75
ThreadLimit 64
ThreadsPerChild 25
MaxRequestWorkers 150
MaxConnectionsPerChild 0

OIDCProviderMetadataURL {metadata_url}
OIDCClientID gateway
OIDCClientSecret {client_secret}
OIDCRedirectURI {callback_url(port)}
OIDCCryptoPassphrase {secrets.token_urlsafe(32)}
OIDCSessionType client-cookie
OIDCPKCEMethod S256
OIDCScope "openid email profile"
OIDCPassClaimsAs headers
OIDCSessionInactivityTimeout 7200
OIDCSessionMaxDuration 43200
OIDCStripCookies {SESSION_COOKIES}

<Location />
  AuthType openid-connect
  Require valid-user
</Location>
ProxyPass / http://127.0.0.1:{upstream_port}/
"""


def start(workdir: Path, port: int, upstream_port: int, metadata_url: str, client_secret: str) -> Child:
    """``apache2 -DFOREGROUND`` with only the generated config: no Debian site, module or log config is read."""
    workdir.mkdir(parents=True, exist_ok=True)
    conf = workdir / "apache2.conf"
    conf.write_text(config(workdir, port, upstream_port, metadata_url, client_secret))
    child = Child("apache2", ["/usr/sbin/apache2", "-d", str(workdir), "-f", str(conf), "-DFOREGROUND"])
    child.wait_for_http(f"http://127.0.0.1:{port}/")
    return child
