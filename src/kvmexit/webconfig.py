# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""`kvmexit exporter --web-config FILE`: TLS, client certificates and basic
auth for /metrics, read from the web configuration file node_exporter and
the rest of the Prometheus ecosystem read (prometheus/exporter-toolkit's
format):

    tls_server_config:
      cert_file: server.crt            # paths relative to this file
      key_file: server.key
      client_auth_type: RequireAndVerifyClientCert
      client_ca_file: ca.crt
      min_version: TLS12
    basic_auth_users:
      prometheus: $2y$10$...           # bcrypt

Python's ssl carries TLS; PyYAML and bcrypt (Debian: python3-yaml,
python3-bcrypt) read the file and check passwords, needed only with this
option.  A wrong or missing password gets 401 and nothing else.
"""
import base64
import hashlib
import importlib.util
import os
import socket
import ssl
import threading
from dataclasses import dataclass, field
from wsgiref.simple_server import WSGIRequestHandler, make_server

from .errors import KvmexitError

TLS_VERSIONS = {"TLS10": ssl.TLSVersion.TLSv1, "TLS11": ssl.TLSVersion.TLSv1_1, "TLS12": ssl.TLSVersion.TLSv1_2,
                "TLS13": ssl.TLSVersion.TLSv1_3}
# exporter-toolkit's client_auth_type -> what Python's ssl does; RequireAnyClientCert (a
# certificate required, not verified) has no equivalent
CLIENT_AUTH = {"NoClientCert": ssl.CERT_NONE, "RequestClientCert": ssl.CERT_OPTIONAL,
               "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL, "RequireAndVerifyClientCert": ssl.CERT_REQUIRED}
TLS_KEYS = {"cert_file", "key_file", "client_auth_type", "client_ca_file", "min_version", "max_version"}


@dataclass
class WebConfig:
    tls: ssl.SSLContext = None
    users: dict = field(default_factory=dict)     # user -> bcrypt hash (bytes)


def _fail(path, what):
    return KvmexitError("--web-config %s: %s" % (path, what))


def load(path):
    """The WebConfig of a web configuration file; KvmexitError naming what is wrong."""
    try:
        import yaml
    except ImportError:
        raise KvmexitError("--web-config needs PyYAML: apt-get install python3-yaml (or pip install pyyaml)") from None
    try:
        with open(path) as f:
            doc = yaml.safe_load(f)
    except OSError as e:
        raise _fail(path, "cannot read it (%s)" % e.strerror) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise _fail(path, "not YAML%s: %s" % (" (line %d)" % (mark.line + 1) if mark else "",
                                              getattr(e, "problem", None) or e)) from None
    doc = doc or {}
    if not isinstance(doc, dict):
        raise _fail(path, "not a mapping of tls_server_config, basic_auth_users")
    unknown = set(doc) - {"tls_server_config", "basic_auth_users", "http_server_config"}
    if unknown:
        raise _fail(path, "unknown key %s; kvmexit reads tls_server_config and basic_auth_users"
                    % ", ".join(sorted(unknown)))
    if doc.get("http_server_config"):
        raise _fail(path, "http_server_config is not supported (HTTP/1.1 only, no extra headers): remove it")
    base = os.path.dirname(os.path.abspath(path))
    cfg = WebConfig()
    if doc.get("tls_server_config") is not None:
        cfg.tls = _tls(path, base, doc["tls_server_config"])
    users = doc.get("basic_auth_users") or {}
    if not isinstance(users, dict) or not all(isinstance(v, str) for v in users.values()):
        raise _fail(path, "basic_auth_users must map each user to a bcrypt hash")
    if users:
        if importlib.util.find_spec("bcrypt") is None:       # needed at every request: said now
            raise KvmexitError("--web-config's basic_auth_users need bcrypt: apt-get install python3-bcrypt "
                               "(or pip install bcrypt)")
        for user, h in users.items():
            if not h.startswith(("$2a$", "$2b$", "$2y$")):
                raise _fail(path, "the password of %s is no bcrypt hash (htpasswd -nbBC 10 USER PASSWORD "
                                  "makes one)" % user)
        cfg.users = {str(u): h.encode() for u, h in users.items()}
    return cfg


def _tls(path, base, tls):
    if not isinstance(tls, dict):
        raise _fail(path, "tls_server_config must be a mapping")
    unknown = set(tls) - TLS_KEYS
    if unknown:
        raise _fail(path, "tls_server_config: %s not supported; kvmexit reads %s"
                    % (", ".join(sorted(unknown)), ", ".join(sorted(TLS_KEYS))))
    if not tls.get("cert_file") or not tls.get("key_file"):
        raise _fail(path, "tls_server_config needs cert_file and key_file")
    auth = tls.get("client_auth_type", "NoClientCert")
    if auth not in CLIENT_AUTH:
        raise _fail(path, "client_auth_type %s is not supported; use one of %s" % (auth, ", ".join(CLIENT_AUTH)))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    for key, attr in (("min_version", "minimum_version"), ("max_version", "maximum_version")):
        v = tls.get(key, "TLS12" if key == "min_version" else None)
        if v is None:
            continue
        if v not in TLS_VERSIONS:
            raise _fail(path, "%s %s is not one of %s" % (key, v, ", ".join(TLS_VERSIONS)))
        setattr(ctx, attr, TLS_VERSIONS[v])

    def rel(p):
        return os.path.join(base, p)
    for key in ("cert_file", "key_file") + (("client_ca_file",) if tls.get("client_ca_file") else ()):
        try:
            with open(rel(tls[key]), "rb"):
                pass
        except OSError as e:
            raise _fail(path, "cannot read %s %s (%s)" % (key, rel(tls[key]), e.strerror)) from None
    try:
        ctx.load_cert_chain(rel(tls["cert_file"]), rel(tls["key_file"]))
    except ssl.SSLError as e:
        raise _fail(path, "cert_file and key_file are no certificate and its key (%s)" % (e.reason or e)) from None
    ctx.verify_mode = CLIENT_AUTH[auth]
    if ctx.verify_mode != ssl.CERT_NONE:
        if not tls.get("client_ca_file"):
            raise _fail(path, "client_auth_type %s needs client_ca_file" % auth)
        try:
            ctx.load_verify_locations(rel(tls["client_ca_file"]))
        except ssl.SSLError as e:
            raise _fail(path, "client_ca_file holds no CA certificate (%s)" % (e.reason or e)) from None
    return ctx


# a hash to check an unknown user's password against, so that a wrong user
# costs what a wrong password does (no user enumeration by timing)
_DUMMY = b"$2b$10$" + b"." * 53


def basic_auth(app, users):
    """A WSGI app that asks app only with a user:password of users (bcrypt);
    else 401 Unauthorized and nothing else.  Passwords that passed are
    remembered by their SHA-256 (bcrypt costs tens of ms a check)."""
    import bcrypt
    good, lock = set(), threading.Lock()

    def check(header):
        if not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:], validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        key = hashlib.sha256(("%s\0%s" % (user, password)).encode()).digest()
        with lock:
            if key in good:
                return True
        h = users.get(user)
        try:
            ok = bcrypt.checkpw(password.encode(), h or _DUMMY) and h is not None
        except ValueError:
            ok = False
        if ok:
            with lock:
                good.add(key)
        return ok

    def wrapped(environ, start_response):
        if check(environ.get("HTTP_AUTHORIZATION", "")):
            return app(environ, start_response)
        start_response("401 Unauthorized", [("WWW-Authenticate", 'Basic realm="kvmexit"'),
                                            ("Content-Type", "text/plain; charset=utf-8")])
        return [b"Unauthorized\n"]
    return wrapped


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args):
        pass


def serve(host, port, registry, cfg=None):
    """Serve /metrics of registry on host:port in a thread, with cfg's TLS
    and basic auth; returns the server (its socket bound)."""
    from prometheus_client import make_wsgi_app
    from prometheus_client.exposition import ThreadingWSGIServer
    app = make_wsgi_app(registry)
    if cfg is not None and cfg.users:
        app = basic_auth(app, cfg.users)
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]
    server_class = type("Server", (ThreadingWSGIServer,), {"address_family": family})
    httpd = make_server(host, port, app, server_class, handler_class=_Quiet)
    if cfg is not None and cfg.tls is not None:
        httpd.socket = cfg.tls.wrap_socket(httpd.socket, server_side=True)
    threading.Thread(target=httpd.serve_forever, daemon=True, name="exporter http").start()
    return httpd
