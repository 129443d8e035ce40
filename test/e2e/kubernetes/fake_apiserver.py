#!/usr/bin/python3
"""A Kubernetes API server for the tests: Nodes only, the real protocol (checked with kubectl).

HTTPS with the certificate and key given (a test CA made by openssl in the test), bearer tokens
(401 with a Status for a wrong or missing one), discovery (/api, /apis, /api/v1, /version) for
kubectl, GET /api/v1/nodes (NodeList), GET /api/v1/nodes/NAME, PATCH (merge and strategic merge
patch of metadata.annotations and labels, and of spec.podCIDR/podCIDRs from unset to set only, as
the real server validates Node updates: 422 otherwise), and ?watch=1|true with resourceVersion,
allowWatchBookmarks (BOOKMARK events every --bookmark-seconds), timeoutSeconds and
sendInitialEvents, streamed as chunked JSON lines. A watch from a resourceVersion older than the
last compaction gets an ERROR event with a Status of code 410, as the real server sends it.

The test drives it through a Unix socket (--control PATH; one JSON request per line, one JSON
answer per line), reachable from every network namespace:
  {"op": "put", "node": {...}}       create or replace a Node (ADDED / MODIFIED events)
  {"op": "delete", "name": N}        DELETED event
  {"op": "get", "name": N}           the stored Node
  {"op": "rotate", "token": T}       only T is accepted from now on; open watches are closed
  {"op": "compact"}                  every open watch gets ERROR 410 and is closed; watches from
                                     an older resourceVersion get 410 too
  {"op": "down"} / {"op": "up"}      stop listening and drop every connection / listen again
  {"op": "stats"}                    request counts: lists, watches, patches, unauthorized, gone
Python stdlib only; run with /usr/bin/python3.
"""
import argparse
import copy
import faulthandler
import json
import os
import signal
import socket
import socketserver
import ssl
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class State:
    def __init__(self, token, bookmark_s):
        self.lock = threading.Condition()
        self.token = token
        self.bookmark_s = bookmark_s
        self.rv = 100
        self.nodes = {}
        self.events = []  # (rv, type, obj)
        self.compacted = 0  # watches from a resourceVersion below this get 410
        self.generation = 0  # bumped by rotate/compact/down: open watches end
        self.gone_generation = 0  # the generation at which open watches get ERROR 410
        self.stats = {"lists": 0, "watches": 0, "patches": 0, "gets": 0, "unauthorized": 0,
                      "gone": 0, "tokens": {}}

    def bump(self):
        self.rv += 1
        return str(self.rv)

    def put(self, node):
        with self.lock:
            node = copy.deepcopy(node)
            node.setdefault("apiVersion", "v1")
            node.setdefault("kind", "Node")
            meta = node.setdefault("metadata", {})
            name = meta["name"]
            typ = "MODIFIED" if name in self.nodes else "ADDED"
            if typ == "ADDED":
                meta.setdefault("uid", "uid-%s-%d" % (name, self.rv))
                meta.setdefault("creationTimestamp", "2026-01-01T00:00:00Z")
            else:
                old = self.nodes[name]["metadata"]
                meta["uid"] = old.get("uid")
                meta["creationTimestamp"] = old.get("creationTimestamp")
            meta["resourceVersion"] = self.bump()
            self.nodes[name] = node
            self.events.append((self.rv, typ, copy.deepcopy(node)))
            self.lock.notify_all()
            return node

    def delete(self, name):
        with self.lock:
            node = self.nodes.pop(name, None)
            if node is None:
                return None
            node = copy.deepcopy(node)
            node["metadata"]["resourceVersion"] = self.bump()
            self.events.append((self.rv, "DELETED", node))
            self.lock.notify_all()
            return node


def status(code, reason, message):
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}


def merge_patch(target, patch):
    """RFC 7386 (strategic merge patch means the same for maps of strings)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if not isinstance(target, dict):
        target = {}
    out = dict(target)
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


DISCOVERY = {
    "/api": {"kind": "APIVersions", "versions": ["v1"],
             "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0",
                                             "serverAddress": "127.0.0.1:443"}]},
    "/apis": {"kind": "APIGroupList", "apiVersion": "v1", "groups": []},
    "/api/v1": {"kind": "APIResourceList", "groupVersion": "v1", "resources": [
        {"name": "nodes", "singularName": "node", "namespaced": False, "kind": "Node",
         "verbs": ["get", "list", "watch", "patch"], "shortNames": ["no"]}]},
    "/version": {"major": "1", "minor": "32", "gitVersion": "v1.32.0-meshwire-test",
                 "platform": "linux/amd64"},
}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "meshwire-test-apiserver"

    def log_message(self, fmt, *args):
        sys.stderr.write("%s %s\n" % (self.address_string(), fmt % args))

    def send_json(self, code, obj):
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def authorized(self):
        st = self.server.state
        auth = self.headers.get("Authorization", "")
        tok = auth[7:] if auth.startswith("Bearer ") else None
        with st.lock:
            ok = tok is not None and tok == st.token
            if not ok:
                st.stats["unauthorized"] += 1
            else:
                st.stats["tokens"][tok] = st.stats["tokens"].get(tok, 0) + 1
        if not ok:
            self.send_json(401, status(401, "Unauthorized", "Unauthorized"))
        return ok

    def route(self):
        u = urllib.parse.urlsplit(self.path)
        return u.path.rstrip("/") or "/", urllib.parse.parse_qs(u.query)

    def do_GET(self):
        if not self.authorized():
            return
        path, q = self.route()
        st = self.server.state
        if path in DISCOVERY:
            return self.send_json(200, DISCOVERY[path])
        if path == "/api/v1/nodes":
            if q.get("watch", [""])[0] in ("1", "true"):
                return self.watch(q)
            with st.lock:
                st.stats["lists"] += 1
                items = [copy.deepcopy(n) for _, n in sorted(st.nodes.items())]
                rv = str(st.rv)
            return self.send_json(200, {"kind": "NodeList", "apiVersion": "v1",
                                        "metadata": {"resourceVersion": rv}, "items": items})
        if path.startswith("/api/v1/nodes/"):
            name = path[len("/api/v1/nodes/"):]
            with st.lock:
                st.stats["gets"] += 1
                n = copy.deepcopy(st.nodes.get(name))
            if n is None:
                return self.send_json(404, status(404, "NotFound",
                                                  'nodes "%s" not found' % name))
            return self.send_json(200, n)
        self.send_json(404, status(404, "NotFound", "the server could not find the requested "
                                                    "resource"))

    def do_PATCH(self):
        if not self.authorized():
            return
        path, _ = self.route()
        st = self.server.state
        length = int(self.headers.get("Content-Length", "0"))
        raw = self.rfile.read(length)
        ctype = self.headers.get("Content-Type", "").split(";")[0]
        if ctype not in ("application/merge-patch+json", "application/strategic-merge-patch+json"):
            return self.send_json(415, status(415, "UnsupportedMediaType",
                                              "the body of the request was in an unknown format"
                                              " - accepted media types include: "
                                              "application/merge-patch+json, "
                                              "application/strategic-merge-patch+json"))
        if not path.startswith("/api/v1/nodes/"):
            return self.send_json(405, status(405, "MethodNotAllowed", "not allowed"))
        name = path[len("/api/v1/nodes/"):]
        try:
            patch = json.loads(raw)
        except ValueError as e:
            return self.send_json(400, status(400, "BadRequest", str(e)))
        with st.lock:
            cur = st.nodes.get(name)
            if cur is None:
                return self.send_json(404, status(404, "NotFound",
                                                  'nodes "%s" not found' % name))
            # Only metadata.annotations and labels may change here, as far as meshd is concerned.
            meta_patch = patch.get("metadata", {}) if isinstance(patch, dict) else {}
            new = copy.deepcopy(cur)
            for k in ("annotations", "labels"):
                if k in meta_patch:
                    new["metadata"][k] = merge_patch(new["metadata"].get(k, {}), meta_patch[k])
            # spec.podCIDR(s): what the node IPAM controller patches in once; the real server
            # refuses any other change (ValidateNodeUpdate).
            spec_patch = patch.get("spec", {}) if isinstance(patch, dict) else {}
            if not isinstance(spec_patch, dict) or set(spec_patch) - {"podCIDR", "podCIDRs"}:
                return self.send_json(422, status(
                    422, "Invalid", 'Node "%s" is invalid: spec: only podCIDR and podCIDRs may be'
                    " patched here" % name))
            spec = new.setdefault("spec", {})
            for k in ("podCIDR", "podCIDRs"):
                if k in spec_patch:
                    if spec.get(k) and spec.get(k) != spec_patch[k]:
                        return self.send_json(422, status(
                            422, "Invalid", 'Node "%s" is invalid: spec.podCIDRs: Forbidden: node'
                            ' updates may not change podCIDR except from "" to valid' % name))
                    spec[k] = copy.deepcopy(spec_patch[k])
            st.stats["patches"] += 1
            out = st.put(new)
        self.send_json(200, out)

    def watch(self, q):
        st = self.server.state
        rv = q.get("resourceVersion", ["0"])[0] or "0"
        bookmarks = q.get("allowWatchBookmarks", [""])[0] == "true"
        initial = q.get("sendInitialEvents", [""])[0] == "true"
        timeout = float(q.get("timeoutSeconds", ["1800"])[0])
        end = time.monotonic() + timeout
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

        def send(obj):
            data = (json.dumps(obj) + "\n").encode()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()

        with st.lock:
            st.stats["watches"] += 1
            gen = st.generation
            start = int(rv)
            if not initial and start != 0 and start < st.compacted:
                st.stats["gone"] += 1
                pending = [("ERROR", status(410, "Expired", "too old resource version: %d (%d)"
                                            % (start, st.compacted)))]
                start = None
            elif initial or start == 0:
                pending = [("ADDED", copy.deepcopy(n)) for _, n in sorted(st.nodes.items())]
                if initial:
                    pending.append(("BOOKMARK", {"kind": "Node", "apiVersion": "v1", "metadata": {
                        "resourceVersion": str(st.rv),
                        "annotations": {"k8s.io/initial-events-end": "true"}}}))
                start = st.rv
            else:
                pending = [(t, copy.deepcopy(o)) for (r, t, o) in st.events if r > start]
                start = st.rv
        try:
            if start is None:
                for t, o in pending:
                    send({"type": t, "object": o})
                return self.end_chunks()
            sent = start
            next_bookmark = time.monotonic() + st.bookmark_s
            while True:
                for t, o in pending:
                    send({"type": t, "object": o})
                pending = []
                now = time.monotonic()
                if now >= end:
                    return self.end_chunks()
                if bookmarks and now >= next_bookmark:
                    with st.lock:
                        cur = st.rv
                    send({"type": "BOOKMARK", "object": {"kind": "Node", "apiVersion": "v1",
                                                         "metadata": {"resourceVersion": str(cur)}}})
                    next_bookmark = now + st.bookmark_s
                with st.lock:
                    st.lock.wait(timeout=0.2)
                    if st.generation != gen:
                        if st.gone_generation == st.generation:
                            st.stats["gone"] += 1
                            pending = [("ERROR", status(410, "Expired",
                                                        "too old resource version"))]
                            for t, o in pending:
                                send({"type": t, "object": o})
                            return self.end_chunks()
                        raise ConnectionAbortedError("closed by the test")
                    pending = [(t, copy.deepcopy(o)) for (r, t, o) in st.events if r > sent]
                    if pending:
                        sent = st.events[-1][0]
        except (OSError, ConnectionError):
            self.close_connection = True

    def end_chunks(self):
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr, state, ctx):
        self.address_family = socket.AF_INET6 if ":" in addr[0] else socket.AF_INET
        self.state = state
        self.ctx = ctx
        self.conns = set()
        self.conns_lock = threading.Lock()
        super().__init__(addr, Handler)

    def server_bind(self):
        # HTTPServer's own does socket.getfqdn(address): a reverse DNS lookup, which in a test
        # namespace without DNS takes seconds (it made `up` miss the control call's deadline).
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def get_request(self):
        sock, addr = self.socket.accept()
        tls = self.ctx.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        with self.conns_lock:
            self.conns.add(tls)
        return tls, addr

    def process_request_thread(self, request, client_address):
        try:
            request.do_handshake()
        except (OSError, ssl.SSLError):
            self.shutdown_request(request)
            return
        super().process_request_thread(request, client_address)

    def shutdown_request(self, request):
        with self.conns_lock:
            self.conns.discard(request)
        super().shutdown_request(request)

    def drop_all(self):
        with self.conns_lock:
            conns = list(self.conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class Api:
    def __init__(self, args):
        self.args = args
        self.state = State(open(args.token_file).read().strip(), args.bookmark_seconds)
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(args.cert, args.key)
        host, port = args.listen.rsplit(":", 1)
        self.addr = (host.strip("[]"), int(port))
        self.server = None
        self.up()

    def up(self):
        if self.server is None:
            self.server = Server(self.addr, self.state, self.ctx)
            threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def down(self):
        s, self.server = self.server, None
        if s is not None:
            s.shutdown()
            s.server_close()
            with self.state.lock:
                self.state.generation += 1
                self.state.lock.notify_all()
            s.drop_all()

    def control(self, req):
        st = self.state
        op = req.get("op")
        if op == "put":
            return {"ok": True, "node": st.put(req["node"])}
        if op == "delete":
            return {"ok": st.delete(req["name"]) is not None}
        if op == "get":
            with st.lock:
                return {"ok": True, "node": copy.deepcopy(st.nodes.get(req["name"]))}
        if op == "rotate":
            with st.lock:
                st.token = req["token"]
                st.generation += 1
                st.lock.notify_all()
            return {"ok": True}
        if op == "compact":
            with st.lock:
                st.compacted = st.rv + 1
                st.generation += 1
                st.gone_generation = st.generation
                st.lock.notify_all()
            return {"ok": True}
        if op == "down":
            self.down()
            return {"ok": True}
        if op == "up":
            self.up()
            return {"ok": True}
        if op == "stats":
            with st.lock:
                return {"ok": True, "stats": copy.deepcopy(st.stats), "rv": st.rv}
        return {"ok": False, "error": "unknown op %r" % op}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--listen", required=True, help="IP:PORT ([v6]:PORT)")
    ap.add_argument("--cert", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--token-file", required=True, help="the bearer token accepted at start")
    ap.add_argument("--control", required=True, help="Unix socket for the test")
    ap.add_argument("--bookmark-seconds", type=float, default=2.0)
    args = ap.parse_args()
    # `kill -USR1` dumps every thread's stack to the log (the tests do it when a call hangs).
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    api = Api(args)

    class Control(socketserver.StreamRequestHandler):
        def handle(self):
            for line in self.rfile:
                try:
                    ans = api.control(json.loads(line))
                except Exception as e:  # noqa: BLE001 - the test gets the error
                    ans = {"ok": False, "error": repr(e)}
                self.wfile.write((json.dumps(ans) + "\n").encode())

    class ControlServer(socketserver.ThreadingUnixStreamServer):
        daemon_threads = True

    if os.path.exists(args.control):
        os.unlink(args.control)
    ctl = ControlServer(args.control, Control)
    print("fake apiserver listening on %s, control %s" % (args.listen, args.control), flush=True)
    try:
        ctl.serve_forever()
    finally:
        api.down()
        os.unlink(args.control)


if __name__ == "__main__":
    main()
