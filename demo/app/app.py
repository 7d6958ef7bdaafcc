"""graceful.wsgi demo app: a plain WSGI app that tells which release, dependency and worker served a request.

    GET /                 {"release", "pid", "dependency": {"name", "version"}, "prefix", "code", "asset"}
    GET /slow?seconds=N   the same after N seconds (keeps requests in flight during a reload)
    GET /healthz          "ok <release>" (503 in an unhealthy release)

demo/make_release.py writes release variants of this file: RELEASE, ASSET (the URL of the release's stylesheet,
static/demo.<hash>.css in the release, which names the release; served by the server, not by this app), and BROKEN
(fails at import) or UNHEALTHY (imports, but /healthz answers 503).
"""

import json
import os
import sys
import time
from urllib.parse import parse_qs

import idna  # the dependency whose version changes between releases

RELEASE = "dev"
# The page's stylesheet, a content-hashed name under the release's static/ ("" here: demo/app has none).
ASSET = ""
BROKEN = False
UNHEALTHY = False

if BROKEN:
    raise ImportError("release " + RELEASE + " is broken: it fails at import, as a bad deploy does")

# Stand-in for an application's start-up cost (imports, connections): it widens the window in which a
# new worker exists but cannot serve yet.
time.sleep(float(os.environ.get("DEMO_IMPORT_DELAY", "0.3")))

SLOW_LIMIT_SECONDS = 60.0


def _identity():
    return {
        "release": RELEASE,
        "pid": os.getpid(),
        "dependency": {"name": "idna", "version": idna.__version__},
        "prefix": sys.prefix,
        "code": os.path.realpath(__file__),
        "asset": ASSET,
    }


def _respond(start_response, status, content_type, body):
    start_response(status, [("Content-Type", content_type), ("Content-Length", str(len(body)))])
    return [body]


def app(environ, start_response):
    path = environ.get("PATH_INFO", "/")
    if path == "/healthz":
        if UNHEALTHY:
            return _respond(start_response, "503 Service Unavailable", "text/plain", b"unhealthy " + RELEASE.encode())
        return _respond(start_response, "200 OK", "text/plain", b"ok " + RELEASE.encode())
    if path == "/slow":
        try:
            seconds = float(parse_qs(environ.get("QUERY_STRING", "")).get("seconds", ["1"])[0])
        except ValueError:
            return _respond(start_response, "400 Bad Request", "text/plain", b"seconds must be a number")
        time.sleep(min(max(seconds, 0.0), SLOW_LIMIT_SECONDS))
    elif path != "/":
        return _respond(start_response, "404 Not Found", "text/plain", b"not found")
    return _respond(start_response, "200 OK", "application/json", json.dumps(_identity()).encode())


application = app
