"""A small ProGet-shaped front: nginx on loopback with ProGet's feed URL layout, real registries behind it.

Like ProGet it answers every feed URL under ``/<type>/<feed>/``; unlike ProGet, the packages are served
by real registry servers (pypiserver, verdaccio, docker-registry) or by nginx itself (static files and
WebDAV PUT for Maven, Cargo, Debian, Helm, NuGet v3). It accepts ONLY the credential the gateway
injects — ``Authorization: Basic api:<key>`` together with ``X-ApiKey: <key>`` — and answers anything
else with 401, as a ProGet whose Anonymous user has no rights would. The backends behind it never see
a credential at all.

Its JSON access log records, per request, the credential headers that arrived, so the tests can prove
that no gateway token ever reached "ProGet" and that a refused request never arrived.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.feeds import tools

FEED_KEY = "proget-feeds-key-4f1c2b7e9d"  # the only key the front accepts (a test value)
FEEDS = {
    "pypi": "pypi-int",
    "npm": "npm-int",
    "docker": "docker-int",
    "maven": "maven-int",
    "cargo": "cargo-int",
    "debian": "debian-int",
    "helm": "helm-int",
    "nuget": "nuget-int",
}
BACKENDS = ("pypi", "npm", "registry", "nuget")
NUGET_BACKEND_KEY = "6f1d2c3b-5a4e-4d0f-8c2b-00000000feed"  # the front's own key for minchoc, not ProGet's

_PROXY = """
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Authorization "";
      proxy_set_header X-ApiKey "";
      proxy_set_header X-NuGet-ApiKey "";
      proxy_set_header Host $http_host;
      proxy_set_header X-Forwarded-Host $http_x_forwarded_host;
      proxy_set_header X-Forwarded-Proto $http_x_forwarded_proto;"""

# The front's own absolute URLs are built the way ProGet builds them without Web.BaseUrl: from the
# request's X-Forwarded-Proto and Host. '@ORIGIN@' in a static index is replaced per request.
_ORIGIN_FILTER = """
      sub_filter '@ORIGIN@' '$http_x_forwarded_proto://$http_host';
      sub_filter_once off;
      sub_filter_types application/json application/yaml;"""


def basic_auth(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def nginx_conf(root: Path, port: int, ports: dict[str, int]) -> str:
    f = FEEDS
    # Workers would run as 'nobody' under a root master and could not read pytest's 0700 tmp dirs.
    user = "user root;" if os.geteuid() == 0 else ""
    return f"""
{user}
worker_processes 1;
daemon off;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 512; }}
http {{
  log_format front escape=json '{{"method":"$request_method","uri":"$request_uri","status":$status,'
    '"authorization":"$http_authorization","x_apikey":"$http_x_apikey",'
    '"x_nuget_apikey":"$http_x_nuget_apikey","cookie":"$http_cookie","host":"$http_host"}}';
  access_log {root}/access.log front;
  client_body_temp_path {root}/tmp/body; proxy_temp_path {root}/tmp/proxy;
  fastcgi_temp_path {root}/tmp/fastcgi; uwsgi_temp_path {root}/tmp/uwsgi; scgi_temp_path {root}/tmp/scgi;
  default_type application/octet-stream;
  types {{ application/json json; application/yaml yaml; text/xml xml pom; text/html html; }}
  client_max_body_size 0;
  map_hash_bucket_size 256;
  proxy_request_buffering off;
  proxy_buffering off;
  chunked_transfer_encoding on;

  map $http_authorization $front_basic_ok {{ "{basic_auth("api", FEED_KEY)}" 1; default 0; }}
  map $http_x_apikey $front_apikey_ok {{ "{FEED_KEY}" 1; default 0; }}
  map $status $front_challenge {{ 401 'Basic realm="ProGet"'; default ""; }}
  map $request_uri $pypi_path {{
    "~^/pypi/{f["pypi"]}/legacy/?(\\?.*)?$" "/pypi/{f["pypi"]}/";  # twine's upload URL, as on ProGet
    default $request_uri;  # pypiserver is mounted at /pypi/<feed>/ (--server-base-url)
  }}
  map $request_uri $npm_path {{ "~^/npm/{f["npm"]}(?<rest>/.*)$" $rest; }}
  # nuget.exe pushes to the feed URL itself (PUT /nuget/<feed>/), like ProGet; minchoc wants .../package/.
  map "$request_method $request_uri" $nuget_path {{
    "~^PUT /nuget/{f["nuget"]}/?$" "/nuget/{f["nuget"]}/package/";
    default $request_uri;
  }}
  # ProGet reads a NuGet push key from X-NuGet-ApiKey: a push must carry the key there too.
  map "$request_method:$http_x_nuget_apikey" $nuget_key_ok {{
    "~^(GET|HEAD):" 1;
    "~^(PUT|POST|DELETE):{FEED_KEY}$" 1;
    default 0;
  }}

  server {{
    listen 127.0.0.1:{port};
    root {root}/www;
    set $front_ok "$front_basic_ok$front_apikey_ok";
    if ($front_ok != "11") {{ return 401 "ProGet front: an API key is required\\n"; }}
    add_header WWW-Authenticate $front_challenge always;

    location /pypi/{f["pypi"]}/ {{ {_PROXY}
      proxy_pass http://127.0.0.1:{ports["pypi"]}$pypi_path;
    }}
    location /npm/{f["npm"]}/ {{ {_PROXY}
      proxy_pass http://127.0.0.1:{ports["npm"]}$npm_path;
    }}
    location /v2/ {{ {_PROXY}
      proxy_pass http://127.0.0.1:{ports["registry"]};
    }}
    location /maven2/{f["maven"]}/ {{
      dav_methods PUT;
      create_full_put_path on;
      dav_access user:rw group:r all:r;
    }}
    location /cargo/{f["cargo"]}/ {{ {_ORIGIN_FILTER} }}
    location /helm/{f["helm"]}/ {{ {_ORIGIN_FILTER} }}
    location /nuget/{f["nuget"]}/ {{ {_PROXY}
      if ($nuget_key_ok = 0) {{ return 401 "ProGet front: a NuGet push needs X-NuGet-ApiKey\n"; }}
      proxy_set_header X-NuGet-ApiKey "{NUGET_BACKEND_KEY}";
      # minchoc writes its links as <Host>/api/v2/...; ProGet's are <Host>/nuget/<feed>/...
      sub_filter '/api/v2/' '/nuget/{f["nuget"]}/';
      sub_filter_once off;
      sub_filter_types application/xml;
      proxy_pass http://127.0.0.1:{ports["nuget"]}$nuget_path;
    }}
    location /debian/{f["debian"]}/ {{ }}
    location / {{ return 404; }}
  }}
}}
"""


@dataclass
class Front:
    root: Path
    port: int
    ports: dict[str, int]
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def www(self) -> Path:
        return self.root / "www"

    def feed_dir(self, kind: str, feed_type: str | None = None) -> Path:
        """The static directory behind ``/<feed_type>/<feed>/`` (e.g. ``feed_dir("maven", "maven2")``)."""
        path = self.www / (feed_type or kind) / FEEDS[kind]
        path.mkdir(parents=True, exist_ok=True)
        return path

    def log(self) -> list[dict[str, Any]]:
        path = self.root / "access.log"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def mark(self) -> int:
        """A position in the access log; ``since(mark)`` returns what arrived after it."""
        return len(self.log())

    def since(self, mark: int) -> list[dict[str, Any]]:
        return self.log()[mark:]


def start_front(root: Path, port: int, ports: dict[str, int]) -> Front:
    for sub in ("tmp", "www"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    conf = root / "nginx.conf"
    conf.write_text(nginx_conf(root, port, ports))
    nginx = tools.tool("nginx")
    log = root / "nginx.out"
    tools.ok(
        tools.run([nginx, "-t", "-p", root, "-e", root / "error.log", "-c", conf], env={"PATH": "/usr/bin"})
    )
    process = tools.start([nginx, "-p", root, "-e", root / "error.log", "-c", conf], log)
    front = Front(root, port, ports, process)
    tools.wait_http(front.url + "/", process, log)
    return front
