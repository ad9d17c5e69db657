# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""The exporter where others can reach it: the node_exporter textfile written
safely into a directory another user may write (links planted at every name
it could use touch nothing outside), and --web-config: TLS, client
certificates, bcrypt basic auth, in exporter-toolkit's format."""
import base64
import json
import os
import shutil
import signal
import ssl
import stat
import subprocess
import tempfile
import urllib.error
import urllib.request

import pytest

from helpers import KVMEXIT, GuestProc, free_port, spawn
from kvmexit import exporter

REGISTRY_TEXT = b"kvmexit_up 1.0\n"


class _Registry:
    """What generate_latest() needs of a registry: one sample."""

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily
        g = GaugeMetricFamily("kvmexit_up", "test")
        g.add_metric([], 1)
        yield g


def test_textfile_through_planted_links_touches_nothing_outside(tmp_path, monkeypatch):
    target_dir = tmp_path / "textfiles"
    target_dir.mkdir(mode=0o1777)
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    path = target_dir / "kvmexit.prom"
    # the names a writer could use: prometheus_client's own (path.PID.TID), the first names
    # mkstemp tries (made predictable here), and the textfile itself
    import threading
    planted = [target_dir / ("kvmexit.prom.%d.%d" % (os.getpid(), threading.get_ident()))]
    names = iter(["a", "a", "b"])
    monkeypatch.setattr(tempfile, "_get_candidate_names", lambda: names)
    planted.append(target_dir / ".kvmexit.prom.a.tmp")
    for p in planted:
        p.symlink_to(victim)
    path.symlink_to(victim)
    exporter._write_textfile(str(path), _Registry())
    assert victim.read_text() == "precious\n"
    assert not path.is_symlink() and path.read_bytes().endswith(REGISTRY_TEXT)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644 & ~_umask()
    # the links are as they were; the one temporary file used went (renamed into place)
    assert all(p.is_symlink() for p in planted)
    assert sorted(p.name for p in target_dir.iterdir()) == sorted([p.name for p in planted] + ["kvmexit.prom"])


def _umask():
    old = os.umask(0)
    os.umask(old)
    return old


def test_textfile_mode_follows_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        exporter._write_textfile(str(tmp_path / "k.prom"), _Registry())
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "k.prom").stat().st_mode) == 0o640


# -- --web-config ------------------------------------------------------------------
def _openssl(*args, cwd):
    subprocess.run(["openssl"] + list(args), cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A CA, a server certificate for 127.0.0.1, a client certificate of that
    CA and one of another CA (openssl, made here)."""
    if not shutil.which("openssl"):
        pytest.skip("openssl not found: apt-get install openssl (make test installs it)")
    d = tmp_path_factory.mktemp("pki")
    for ca in ("ca", "otherca"):
        _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca + ".key", "-out", ca + ".crt",
                 "-days", "2", "-subj", "/CN=" + ca, cwd=d)
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    for name, ca, ext in (("server", "ca", ["-extfile", "san.ext"]), ("client", "ca", []), ("stranger", "otherca", [])):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", name + ".key", "-out", name + ".csr",
                 "-subj", "/CN=" + name, cwd=d)
        _openssl("x509", "-req", "-in", name + ".csr", "-CA", ca + ".crt", "-CAkey", ca + ".key", "-CAcreateserial",
                 "-out", name + ".crt", "-days", "2", *ext, cwd=d)
    return d


class Exporter:
    """`kvmexit exporter --calibrate` on a free loopback port, up once it says so."""

    def __init__(self, *args):
        self.port = free_port()
        self.p = spawn(KVMEXIT + ["exporter", "--calibrate", "--listen", "127.0.0.1:%d" % self.port, "--by", "thread"]
                       + [str(a) for a in args], stderr=subprocess.PIPE)
        self.line = self.p.stderr.readline()
        assert self.line.startswith("kvmexit exporter: "), self.line + self.p.stderr.read()

    def get(self, scheme="https", ctx=None, auth=None):
        req = urllib.request.Request("%s://127.0.0.1:%d/metrics" % (scheme, self.port))
        if auth:
            req.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
        with urllib.request.urlopen(req, timeout=30, context=ctx) as r:
            return r.status, r.read().decode()

    def stop(self):
        self.p.send_signal(signal.SIGTERM)
        assert self.p.wait(30) == 0


def _client(pki, cert=None):
    ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    if cert:
        ctx.load_cert_chain(str(pki / (cert + ".crt")), str(pki / (cert + ".key")))
    return ctx


def _exits(text):
    from prometheus_client.parser import text_string_to_metric_families
    return {tuple(sorted(s.labels.items())): s.value for f in text_string_to_metric_families(text)
            for s in f.samples if s.name == "kvmexit_exits_total"}


@pytest.mark.bpf
@pytest.mark.kvm
def test_tls_scrape_equals_the_plain_one(pki, tmp_path):
    cfg = tmp_path / "web.yml"
    cfg.write_text("tls_server_config:\n  cert_file: %s\n  key_file: %s\n" % (pki / "server.crt", pki / "server.key"))
    g = GuestProc(["sync,out:0x80:300,sync", "sync,out:0x81:200,sync"])
    tls, plain = Exporter("-p", g.pid, "--web-config", cfg), Exporter("-p", g.pid)
    assert tls.line.rstrip().endswith("https://127.0.0.1:%d/metrics" % tls.port)
    g.release()
    assert json.loads(g.p.stdout.readline()) == {"sync": 1}
    status, text = tls.get(ctx=_client(pki))
    assert status == 200
    assert _exits(text) == _exits(plain.get("http")[1]) and sum(_exits(text).values()) == 502
    with pytest.raises((urllib.error.URLError, ConnectionError)):    # TLS only: no plain HTTP
        tls.get("http")
    g.finish()
    tls.stop()
    plain.stop()


@pytest.mark.bpf
def test_client_certificates_required_and_verified(pki, tmp_path):
    cfg = tmp_path / "web.yml"
    cfg.write_text("tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
                   "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.crt\n  min_version: TLS13\n")
    for f in ("server.crt", "server.key", "ca.crt"):           # paths relative to the file
        shutil.copy(pki / f, tmp_path / f)
    e = Exporter("--web-config", cfg)
    assert e.get(ctx=_client(pki, "client"))[0] == 200
    for who in (None, "stranger"):                             # no certificate, one of another CA
        with pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionError)):
            e.get(ctx=_client(pki, who))
    older = _client(pki, "client")
    older.maximum_version = ssl.TLSVersion.TLSv1_2
    with pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionError)):
        e.get(ctx=older)
    e.stop()


@pytest.mark.bpf
def test_basic_auth_good_and_bad_passwords(pki, tmp_path):
    import bcrypt
    cfg = tmp_path / "web.yml"
    h = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(4)).decode().replace("$2b$", "$2y$")     # htpasswd's spelling
    cfg.write_text("tls_server_config:\n  cert_file: %s\n  key_file: %s\nbasic_auth_users:\n  prom: '%s'\n"
                   % (pki / "server.crt", pki / "server.key", h))
    e = Exporter("--web-config", cfg)
    ctx = _client(pki)
    assert e.get(ctx=ctx, auth="prom:s3cret")[0] == 200
    for auth in ("prom:wrong", "nobody:s3cret", None):
        with pytest.raises(urllib.error.HTTPError) as err:
            e.get(ctx=ctx, auth=auth)
        assert (err.value.code, err.value.read(), err.value.headers["WWW-Authenticate"]) == \
            (401, b"Unauthorized\n", 'Basic realm="kvmexit"')
    e.stop()


@pytest.mark.bpf
@pytest.mark.parametrize("text,why", [
    ("tls_server_config: [1, 2\n", "not YAML (line 2)"),
    ("tls_server_config:\n  cert_file: nothere.crt\n  key_file: nothere.key\n", "cannot read cert_file "),
    ("tls_config:\n  cert_file: a\n", "unknown key tls_config; kvmexit reads tls_server_config and basic_auth_users"),
    ("tls_server_config:\n  cert_file: a\n", "tls_server_config needs cert_file and key_file"),
    ("basic_auth_users:\n  prom: plaintext\n", "the password of prom is no bcrypt hash"),
    ("tls_server_config:\n  cert_file: k.key\n  key_file: k.key\n", "cert_file and key_file are no certificate"),
    ("tls_server_config:\n  cert_file: s.crt\n  key_file: s.key\n  client_auth_type: RequireAnyClientCert\n",
     "client_auth_type RequireAnyClientCert is not supported"),
])
def test_bad_web_config_is_one_line(pki, tmp_path, text, why):
    shutil.copy(pki / "server.crt", tmp_path / "s.crt")
    shutil.copy(pki / "server.key", tmp_path / "s.key")
    (tmp_path / "k.key").write_text("not a key\n")
    cfg = tmp_path / "web.yml"
    cfg.write_text(text)
    r = subprocess.run(KVMEXIT + ["exporter", "--calibrate", "--listen", "127.0.0.1:%d" % free_port(),
                                  "--web-config", str(cfg)], capture_output=True, text=True, timeout=60)
    assert (r.returncode, r.stdout) == (1, "") and "Traceback" not in r.stderr
    assert len(r.stderr.splitlines()) == 1 and r.stderr.startswith("kvmexit exporter: --web-config %s: " % cfg)
    assert why in r.stderr, r.stderr
