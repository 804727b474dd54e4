"""Fetching what the servers need: Debian packages when missing, a JVM, Maven artifacts once."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from processes import ARTIFACTS, HERE, ServiceError, log


def apt_install(packages: Sequence[str]) -> None:
    """Install Debian packages, once, and only the missing ones."""
    if not packages:
        return
    if os.geteuid() != 0:
        raise ServiceError(f"missing packages; run: sudo apt-get install -y {' '.join(packages)}")
    log(f"apt-get install {' '.join(packages)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *packages]):
        done = subprocess.run(argv, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise ServiceError(f"{' '.join(argv)} failed:\n{done.stdout[-2000:]}{done.stderr}")


def java_binary() -> str:
    """The JVM to run servers with: $FAULTLINE_JAVA, $JAVA_HOME/bin/java or `java`, >= 17."""
    java = os.environ.get("FAULTLINE_JAVA") or (
        str(Path(os.environ["JAVA_HOME"]) / "bin" / "java")
        if os.environ.get("JAVA_HOME")
        else shutil.which("java")
    )
    if not java or not Path(java).exists():
        raise ServiceError("no Java found: install a JDK >= 17 or set FAULTLINE_JAVA")
    out = subprocess.run([java, "-version"], capture_output=True, text=True).stderr
    version = out.split('"')[1] if '"' in out else "0"
    if int(version.split(".")[0]) < 17:
        raise ServiceError(f"{java} is Java {version}; Kafka 4 and Cassandra 5 need >= 17")
    return java


def maven_classpath(service: str) -> Path:
    """The jar directory for `scripts/services/<service>/pom.xml`, fetched on first use.

    The directory is named after the pom's hash, so changing a version fetches anew.
    """
    pom = HERE / service / "pom.xml"
    digest = hashlib.sha256(pom.read_bytes()).hexdigest()[:12]
    lib = ARTIFACTS / f"{service}-{digest}"
    if (lib / ".complete").exists():
        return lib
    mvn = shutil.which("mvn")
    if mvn is None:
        apt_install(["maven"])
        mvn = "mvn"
    log(f"fetching {service} jars from Maven Central into {lib}")
    started = time.monotonic()
    done = subprocess.run(
        [mvn, "-q", "-B", "-f", str(pom), "dependency:copy-dependencies",
         "-DincludeScope=runtime", f"-DoutputDirectory={lib}"],
        capture_output=True, text=True,
    )  # fmt: skip
    if done.returncode != 0:
        raise ServiceError(f"Maven could not fetch {service}:\n{done.stdout[-3000:]}{done.stderr}")
    (lib / ".complete").touch()
    log(f"{service} jars fetched in {time.monotonic() - started:.1f} s")
    return lib
