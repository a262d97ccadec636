"""A local base image from Debian's own packages, for building the project's Dockerfile without a registry.

``mmdebstrap`` makes a minimal root filesystem of this machine's Debian release (from its apt sources) with
Debian's Python, ``docker import`` turns it into an image, and a test-only layer adds this machine's CA bundle,
which pip needs to reach the package index through this network. The project's image never gets that layer:
only this base does. The result is cached in the engine under a tag keyed by the recipe below and the CA
bundle's content: a run with the same key reuses it (``docker rmi`` the tag to rebuild it).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import tempfile
from pathlib import Path

from .engine import docker

PACKAGES = ("python3", "python3-venv", "python-is-python3", "ca-certificates", "passwd")
# Like Debian's slim images: no documentation (but its copyright files), manuals or translations.
DPKG_OPTIONS = (
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/locale/*",
)
RECIPE_VERSION = 1  # bump when the steps below change
LABEL = "cognito-gateway.test-base"  # carried by every image built on this base, so the tests can clean up
CA_PATH = "/etc/ssl/certs/ca-certificates.crt"  # where the layer puts the host's bundle (Debian's own path)
LAYER_DOCKERFILE = f"""\
FROM {{imported}}
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8
# TEST ONLY: this machine's CA bundle, so that pip in the build can verify the package index it reaches.
COPY ca-certificates.crt {CA_PATH}
"""


def debian_release() -> str:
    for line in Path("/etc/os-release").read_text().splitlines():
        if line.startswith("VERSION_CODENAME="):
            return line.split("=", 1)[1].strip('"')
    raise AssertionError("no VERSION_CODENAME in /etc/os-release")


def cache_tag(release: str, ca_bundle: Path) -> str:
    recipe = json.dumps([RECIPE_VERSION, release, PACKAGES, DPKG_OPTIONS, LAYER_DOCKERFILE]).encode()
    key = hashlib.sha256(recipe + ca_bundle.read_bytes()).hexdigest()[:12]
    return f"cognito-gateway-test-base:{release}-{key}"


def exists(tag: str) -> bool:
    return docker("image", "inspect", tag, check=False).returncode == 0


def _bootstrap(release: str, tarball: Path) -> None:
    if shutil.which("mmdebstrap") is None:
        raise FileNotFoundError("mmdebstrap is not installed (apt-get install mmdebstrap)")
    command = ["mmdebstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}"]
    command += [f"--dpkgopt={option}" for option in DPKG_OPTIONS]
    result = subprocess.run([*command, release, str(tarball)], capture_output=True, text=True, timeout=900, check=False)
    if result.returncode != 0:
        raise AssertionError(f"mmdebstrap failed:\n{result.stderr[-3000:]}")


def build_base(tag: str, release: str, ca_bundle: Path) -> None:
    """mmdebstrap → docker import → the CA layer, tagged ``tag``."""
    with tempfile.TemporaryDirectory(prefix="cgw-base-") as scratch:
        work = Path(scratch)
        _bootstrap(release, work / "rootfs.tar")
        imported = f"{tag}-rootfs"
        docker("import", "--change", f"LABEL {LABEL}={tag}", str(work / "rootfs.tar"), imported, timeout=600)
        (work / "rootfs.tar").unlink()
        shutil.copyfile(ca_bundle, work / "ca-certificates.crt")
        (work / "Dockerfile").write_text(LAYER_DOCKERFILE.format(imported=imported))
        docker("build", "--network", "host", "-t", tag, str(work), timeout=600)
        docker("rmi", imported, check=False)  # the layered tag keeps its layers
