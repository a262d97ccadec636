"""Real nginx and Caddy (Debian's packages) in front of the gateway, with the forward-auth configurations the
README gives, each started on a free loopback port with its own config in a temp dir."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from .support import free_port


def require(binary: str) -> str:
    """The binary's path; a visible skip locally, a failure under CI=true, when it is missing."""
    path = shutil.which(binary) or (f"/usr/sbin/{binary}" if os.path.exists(f"/usr/sbin/{binary}") else None)
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{binary} is missing (apt-get install {binary}); CI must run the forward-auth tests")
        pytest.skip(f"{binary} is missing (apt-get install {binary}): forward-auth test not run")
    return path


NGINX_CONF = """
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    server {{
        listen 127.0.0.1:{port};
        # The gateway's own endpoints and its callback.
        location /oauth2/ {{
            proxy_pass http://127.0.0.1:{gateway};
            proxy_set_header Host $http_host;
            proxy_set_header X-Auth-Request-Redirect $request_uri;
        }}
        location = /cognito_redirect {{
            proxy_pass http://127.0.0.1:{gateway};
            proxy_set_header Host $http_host;
        }}
        location = /oauth2/auth {{
            internal;
            proxy_pass http://127.0.0.1:{gateway};
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header Host $http_host;
            proxy_set_header X-Original-URL $scheme://$http_host$request_uri;
            proxy_set_header X-Original-Method $request_method;
        }}
        # The app nginx serves, open only to whom the gateway says yes.
        location / {{
            auth_request /oauth2/auth;
            auth_request_set $user $upstream_http_x_auth_request_user;
            auth_request_set $email $upstream_http_x_auth_request_email;
            auth_request_set $groups $upstream_http_x_auth_request_groups;
            error_page 401 = /oauth2/sign_in;
            proxy_set_header X-Forwarded-User $user;
            proxy_set_header X-Forwarded-Email $email;
            proxy_set_header X-Forwarded-Groups $groups;
            proxy_pass http://127.0.0.1:{app};
        }}
    }}
}}
"""

CADDYFILE = """
{{
    admin off
    auto_https off
}}
http://127.0.0.1:{port} {{
    handle /oauth2/* {{
        reverse_proxy 127.0.0.1:{gateway}
    }}
    handle /cognito_redirect {{
        reverse_proxy 127.0.0.1:{gateway}
    }}
    handle {{
        forward_auth 127.0.0.1:{gateway} {{
            uri /oauth2/auth
            copy_headers X-Auth-Request-User X-Auth-Request-Email X-Auth-Request-Groups
            @unauthorized status 401
            handle_response @unauthorized {{
                redir * /oauth2/sign_in?rd={{uri}}
            }}
        }}
        reverse_proxy 127.0.0.1:{app}
    }}
}}
"""


class FrontProxy:
    def __init__(self, kind: str, tmp: Path, *, port: int, gateway: int, app: int) -> None:
        self.kind, self.port, self.dir = kind, port, tmp
        self.url = f"http://127.0.0.1:{port}"
        settings = {"dir": tmp, "port": port, "gateway": gateway, "app": app}
        if kind == "nginx":
            for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
                (tmp / sub).mkdir(exist_ok=True)
            (tmp / "nginx.conf").write_text(NGINX_CONF.format(**settings))
            command = [require("nginx"), "-p", str(tmp), "-c", str(tmp / "nginx.conf")]
        else:
            (tmp / "Caddyfile").write_text(CADDYFILE.format(**settings))
            command = [require("caddy"), "run", "--config", str(tmp / "Caddyfile"), "--adapter", "caddyfile"]
        env = {**os.environ, "XDG_DATA_HOME": str(tmp / "data"), "XDG_CONFIG_HOME": str(tmp / "config")}
        self.log = (tmp / f"{kind}.out").open("w")
        self.process = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT, env=env)
        self._wait_listening()

    def _wait_listening(self) -> None:
        deadline = time.monotonic() + 15
        while True:
            try:
                urllib.request.urlopen(f"{self.url}/oauth2/healthz", timeout=2).close()
                return
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    output = (self.dir / f"{self.kind}.out").read_text()
                    raise AssertionError(f"{self.kind} did not start: {output}") from None
                time.sleep(0.1)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


def front_port() -> int:
    return free_port()
