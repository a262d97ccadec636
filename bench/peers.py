"""The programs the gateway is compared with, each started from a config generated into a temp dir.

- nginx: the upstream every target reaches, a fixed 200-byte answer; one worker so it leaves the cores to the
  proxies, access log off, HTTP keep-alive without a per-connection request cap (so no proxy pays for reconnects).
  Its ``stub_status`` counts the requests that really reached it, which is how the bench proves that an
  "authenticated" run was answered by the upstream and not by 302s (wrk counts 3xx as successes).
- the minimal aiohttp proxy (``minimal_proxy.py``): aiohttp's own floor.
- Apache 2.4 + mod_auth_openidc, configured like the gateway (see ``apache_config``).
- redis-server for the gateway's Redis session store.

Every one of them runs in the foreground as a child of the bench, so its whole process tree can be measured and
stopped.
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

from procs import Child, http_status

BENCH = Path(__file__).resolve().parent
# 200 bytes without quotes or "$", so it can sit in nginx's `return` as it is.
BODY = ("0123456789" * 20).encode()
STATUS_PATH = "/__bench_upstream_status"
DISCOVERY_PATH = "/__bench_discovery.json"  # apache.metadata_without_userinfo writes it into the temp dir
_own_reads = 0  # stub_status reads so far: nginx counts each one as a request


def nginx_config(workdir: Path, port: int) -> str:
    temp_paths = "\n".join(
        f"  {kind}_temp_path {workdir}/{kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""daemon off;
worker_processes 1;
pid {workdir}/nginx.pid;
error_log {workdir}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  keepalive_timeout 75s;
  keepalive_requests 100000000;
{temp_paths}
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    location = {STATUS_PATH} {{ stub_status; }}
    location = {DISCOVERY_PATH} {{ default_type application/json; alias {workdir}{DISCOVERY_PATH}; }}
    location / {{ default_type text/plain; return 200 "{BODY.decode()}"; }}
  }}
}}
"""


def start_nginx(workdir: Path, port: int) -> Child:
    conf = workdir / "nginx.conf"
    conf.write_text(nginx_config(workdir, port))
    workdir.chmod(0o711)  # nginx's workers (nobody) may open the discovery document in it, not list it
    child = Child("nginx", ["nginx", "-p", str(workdir), "-c", str(conf), "-e", str(workdir / "nginx-error.log")])
    child.wait_for_http(f"http://127.0.0.1:{port}/")
    return child


def upstream_requests(port: int) -> int:
    """How many requests nginx has received, once the stragglers have landed.

    When wrk stops, a proxy may still be forwarding the requests it had in flight; counted late, they would look
    like the next run's. So it reads nginx's stub_status counter until only its own reads move it, and leaves
    those reads (which nginx counts too) out of the figure.
    """
    count = _stub_status_requests(port)
    for _ in range(50):
        time.sleep(0.1)
        again = _stub_status_requests(port)
        if again == count + 1:
            return again - _own_reads
        count = again
    raise SystemExit("bench: requests kept reaching nginx 5 s after wrk stopped")


def _stub_status_requests(port: int) -> int:
    global _own_reads
    _own_reads += 1
    status, _, body = http_status(f"http://127.0.0.1:{port}{STATUS_PATH}")
    if status != 200:
        raise SystemExit(f"bench: nginx stub_status answered {status}")
    accepts_handled_requests = re.search(rb"\n\s*(\d+)\s+(\d+)\s+(\d+)\s*\n", body)
    return int(accepts_handled_requests.group(3))  # type: ignore[union-attr]


def start_minimal_proxy(port: int, upstream: str) -> Child:
    child = Child("minimal proxy", [sys.executable, str(BENCH / "minimal_proxy.py"), str(port), upstream])
    child.wait_for_http(f"http://127.0.0.1:{port}/")
    return child


def start_redis(port: int) -> Child:
    child = Child("redis-server", ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""])
    child.wait_for_line("Ready to accept connections")
    return child
