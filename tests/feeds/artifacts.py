"""Tiny, unmistakably named test packages, built locally without any registry.

Names all start with ``proxytest`` so nothing can be satisfied by a public package of the same name.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import tarfile
import zipfile
from pathlib import Path

WHEEL_NAME = "proxytest-feeds-pkg"
WHEEL_VERSION = "0.1.0"


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def wheel(directory: Path, name: str = WHEEL_NAME, version: str = WHEEL_VERSION) -> Path:
    """A pure-Python wheel with one module; built by hand so no build backend is needed."""
    module = name.replace("-", "_")
    dist_info = f"{module}-{version}.dist-info"
    files = {
        f"{module}/__init__.py": f'VALUE = "{name} {version}"\n'.encode(),
        f"{dist_info}/METADATA": (
            f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\nSummary: gateway feed test\n"
        ).encode(),
        f"{dist_info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: proxytest\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "".join(f"{path},{_record_hash(data)},{len(data)}\n" for path, data in files.items())
    record += f"{dist_info}/RECORD,,\n"
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{module}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name_in_zip, data in files.items():
            zf.writestr(name_in_zip, data)
        zf.writestr(f"{dist_info}/RECORD", record)
    return path


def npm_package(directory: Path, name: str, version: str, dependencies: dict[str, str] | None = None) -> Path:
    """A package directory ready for ``npm publish``."""
    directory.mkdir(parents=True, exist_ok=True)
    manifest = {
        "name": name,
        "version": version,
        "main": "index.js",
        "license": "MIT",
        "description": "gateway feed test",
        "dependencies": dependencies or {},
    }
    (directory / "package.json").write_text(json.dumps(manifest, indent=2))
    (directory / "index.js").write_text(f"module.exports = {json.dumps(name + ' ' + version)};\n")
    return directory


def targz(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def jar(path: Path) -> Path:
    """A jar with one resource; the consumer build only needs it on the classpath."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("META-INF/MANIFEST.MF", "Manifest-Version: 1.0\n")
        zf.writestr("proxytest/feeds.txt", "hello from the maven feed\n")
    return path


def oci_layout(directory: Path, tag: str, layer_bytes: int) -> Path:
    """An OCI image layout (one gzip layer of ``layer_bytes`` incompressible bytes) for skopeo."""
    blobs = directory / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)

    def put(data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        (blobs / digest).write_bytes(data)
        return digest

    payload = hashlib.shake_256(b"proxytest-oci").digest(layer_bytes)
    raw_layer = io.BytesIO()
    with tarfile.open(fileobj=raw_layer, mode="w") as tar:
        info = tarfile.TarInfo("payload.bin")
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    diff_id = hashlib.sha256(raw_layer.getvalue()).hexdigest()
    layer = gzip.compress(raw_layer.getvalue(), mtime=0)
    layer_digest = put(layer)
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": [f"sha256:{diff_id}"]},
        }
    ).encode()
    config_digest = put(config)
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": f"sha256:{config_digest}",
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": f"sha256:{layer_digest}",
                    "size": len(layer),
                }
            ],
        }
    ).encode()
    manifest_digest = put(manifest)
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": f"sha256:{manifest_digest}",
                "size": len(manifest),
                "annotations": {"org.opencontainers.image.ref.name": tag},
            }
        ],
    }
    (directory / "index.json").write_text(json.dumps(index))
    (directory / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    return directory
