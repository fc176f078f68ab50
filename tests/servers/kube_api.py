"""A stand-in for the Kubernetes API server (no real one can run here), for the enrichment tests.

It serves, on 127.0.0.1 and a free port, the few endpoints siemhub's node agent uses, as the API
server documents them (https://kubernetes.io/docs/reference/using-api/api-concepts/):

  GET /api/v1/pods?fieldSelector=spec.nodeName=<node>             a PodList with metadata.resourceVersion
  GET /api/v1/pods?watch=true&resourceVersion=<rv>&fieldSelector=...&timeoutSeconds=<s>
      a chunked stream of newline-delimited watch events {"type": ADDED|MODIFIED|DELETED|BOOKMARK,
      "object": <Pod>} for changes after <rv>; a resourceVersion older than the compaction point gets
      HTTP 200 with one {"type": "ERROR", "object": <Status 410 Expired>} event, as the real server
      sends it, and the client must list again
  GET /apis/apps/v1/namespaces/<ns>/replicasets/<name>            a ReplicaSet, or a 404 Status
  GET /apis/batch/v1/namespaces/<ns>/jobs/<name>                  a Job, or a 404 Status
  GET /api/v1/nodes/<name>                                        a Node, or a 404 Status

Requests need `Authorization: Bearer <token>` (401 Status otherwise). Unsupported field selectors get
400, as the real server answers for a field label it does not support. Tests drive it: add, modify and
delete pods (each change gets the next resourceVersion), compact the history (so that a watch from an
older version gets 410), and drop the open watch connections mid-stream. Every request is recorded.
"""

from __future__ import annotations

import copy
import json
import socket
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _status(code: int, reason: str, message: str) -> dict:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": reason, "code": code}


def pod(namespace: str, name: str, node: str, *, uid: str | None = None, labels: dict | None = None,
        annotations: dict | None = None, owner: tuple[str, str] | None = None,
        containers: list[tuple[str, str, str | None, str | None]] = (), qos: str = "BestEffort",
        phase: str = "Running") -> dict:
    """A Pod as the API server returns it. containers: (name, image, image id or None, container id or
    None): a container without an id is one the kubelet has not reported started yet."""
    uid = uid or str(uuid.uuid4())
    meta: dict = {"name": name, "namespace": namespace, "uid": uid, "creationTimestamp": "2026-12-06T03:00:00Z",
                  "labels": dict(labels or {}), "annotations": dict(annotations or {})}
    if owner is not None:
        api = "apps/v1" if owner[0] in ("ReplicaSet", "StatefulSet", "DaemonSet") else "batch/v1"
        meta["ownerReferences"] = [{"apiVersion": api, "kind": owner[0], "name": owner[1], "uid": str(uuid.uuid4()),
                                    "controller": True, "blockOwnerDeletion": True}]
    statuses = []
    for cname, image, image_id, cid in containers:
        if cid is None:
            continue
        statuses.append({"name": cname, "image": image, "imageID": image_id or "", "containerID": f"containerd://{cid}",
                         "ready": True, "started": True, "restartCount": 0,
                         "state": {"running": {"startedAt": "2026-12-06T03:00:01Z"}}})
    return {
        "kind": "Pod", "apiVersion": "v1", "metadata": meta,
        "spec": {"nodeName": node, "serviceAccountName": "default",
                 "containers": [{"name": c[0], "image": c[1]} for c in containers]},
        "status": {"phase": phase, "qosClass": qos, "containerStatuses": statuses},
    }


def workload(kind: str, namespace: str, name: str, owner: tuple[str, str] | None = None) -> dict:
    """A ReplicaSet (apps/v1) or Job (batch/v1), optionally owned by a Deployment or CronJob."""
    api = "apps/v1" if kind == "ReplicaSet" else "batch/v1"
    meta: dict = {"name": name, "namespace": namespace, "uid": str(uuid.uuid4()), "resourceVersion": "1"}
    if owner is not None:
        meta["ownerReferences"] = [{"apiVersion": "apps/v1" if owner[0] == "Deployment" else "batch/v1",
                                    "kind": owner[0], "name": owner[1], "uid": str(uuid.uuid4()),
                                    "controller": True, "blockOwnerDeletion": True}]
    return {"kind": kind, "apiVersion": api, "metadata": meta, "spec": {}, "status": {}}


class KubeApiStandIn:
    """Start with `with KubeApiStandIn(token) as api:`; api.url is the server's base URL."""

    def __init__(self, token: str = "test-token", tls: tuple[str, str] | None = None) -> None:
        """tls: (certificate, key) PEM files: serve HTTPS, as every real API server does."""
        self.token = token
        self._lock = threading.Condition()
        self._rv = 100
        self._compacted = 0  # watches from a resourceVersion below this get 410 Gone
        self.pods: dict[tuple[str, str], dict] = {}
        self._history: list[tuple[int, str, dict]] = []  # (resourceVersion, type, pod)
        self.objects: dict[tuple[str, str, str], dict] = {}  # (kind, namespace, name) -> ReplicaSet / Job
        self.nodes: dict[str, dict] = {}  # name -> Node
        self.requests: list[tuple[str, dict]] = []  # (path, query)
        self._watch_sockets: list[socket.socket] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", free_port()), self._handler())
        self._server.daemon_threads = True
        scheme = "http"
        if tls is not None:
            import ssl

            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(*tls)
            self._server.socket = ctx.wrap_socket(self._server.socket, server_side=True)
            scheme = "https"
        self.url = f"{scheme}://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> "KubeApiStandIn":
        threading.Thread(target=self._server.serve_forever, name="kube-api-stand-in", daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.drop_watches()
        self._server.shutdown()
        self._server.server_close()

    # --- what tests change ---

    def put(self, obj: dict) -> dict:
        """Create or update a pod (ADDED or MODIFIED); returns it with its new resourceVersion."""
        with self._lock:
            key = (obj["metadata"]["namespace"], obj["metadata"]["name"])
            old = self.pods.get(key)
            if old is not None and old["metadata"]["uid"] != obj["metadata"]["uid"]:
                raise ValueError(f"pod {key} exists with another uid: delete it first")
            self._rv += 1
            obj = copy.deepcopy(obj)
            obj["metadata"]["resourceVersion"] = str(self._rv)
            self.pods[key] = obj
            self._history.append((self._rv, "MODIFIED" if old is not None else "ADDED", obj))
            self._lock.notify_all()
            return obj

    def delete(self, namespace: str, name: str, missed: bool = False) -> None:
        """missed: no watch event (as when a watcher misses one); only a list shows it is gone."""
        with self._lock:
            obj = self.pods.pop((namespace, name))
            if missed:
                self._rv += 1
                return
            self._rv += 1
            obj = copy.deepcopy(obj)
            obj["metadata"]["resourceVersion"] = str(self._rv)
            obj["metadata"]["deletionTimestamp"] = "2026-12-06T03:10:00Z"
            self._history.append((self._rv, "DELETED", obj))
            self._lock.notify_all()

    def add_object(self, obj: dict) -> None:
        m = obj["metadata"]
        self.objects[(obj["kind"], m["namespace"], m["name"])] = obj

    def compact(self) -> None:
        """Forget the history (etcd compaction): a watch resuming from an older version gets 410."""
        with self._lock:
            self._compacted = self._rv + 1
            self._history.clear()
            self._lock.notify_all()

    def drop_watches(self) -> None:
        """Cut every open watch connection mid-stream (a load balancer or API server restart)."""
        with self._lock:
            socks, self._watch_sockets = self._watch_sockets, []
            self._lock.notify_all()
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def watches(self) -> list[dict]:
        return [q for p, q in self.requests if p == "/api/v1/pods" and q.get("watch") == "true"]

    def lists(self) -> list[dict]:
        return [q for p, q in self.requests if p == "/api/v1/pods" and q.get("watch") != "true"]

    # --- HTTP ---

    def _handler(self):
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _json(self, code: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):  # noqa: N802 - http.server's name
                url = urlsplit(self.path)
                query = {k: v[-1] for k, v in parse_qs(url.query).items()}
                api.requests.append((url.path, query))
                if self.headers.get("Authorization") != f"Bearer {api.token}":
                    return self._json(401, _status(401, "Unauthorized", "Unauthorized"))
                parts = url.path.strip("/").split("/")
                if url.path == "/api/v1/pods":
                    return self._pods(query)
                if len(parts) == 4 and parts[:3] == ["api", "v1", "nodes"]:
                    obj = api.nodes.get(parts[3])
                    if obj is None:
                        return self._json(404, _status(404, "NotFound", f'nodes "{parts[3]}" not found'))
                    return self._json(200, obj)
                # /apis/<group>/<version>/namespaces/<namespace>/<resource>/<name>
                if len(parts) == 7 and parts[0] == "apis" and parts[3] == "namespaces":
                    kind = {("apps", "v1", "replicasets"): "ReplicaSet",
                            ("batch", "v1", "jobs"): "Job"}.get((parts[1], parts[2], parts[5]))
                    if kind is not None:
                        obj = api.objects.get((kind, parts[4], parts[6]))
                        if obj is None:
                            return self._json(404, _status(404, "NotFound",
                                                           f'{parts[5]}.{parts[1]} "{parts[6]}" not found'))
                        return self._json(200, obj)
                return self._json(404, _status(404, "NotFound", "the server could not find the requested resource"))

            def _pods(self, query: dict):
                selector = query.get("fieldSelector", "")
                node = None
                for term in filter(None, selector.split(",")):
                    key, _, value = term.partition("=")
                    if key != "spec.nodeName":
                        return self._json(400, _status(400, "BadRequest",
                                                       f'Unable to find "/v1, Resource=pods" that match label selector "", '
                                                       f'field selector "{selector}": field label not supported: {key}'))
                    node = value.lstrip("=")
                if query.get("watch") not in ("true", "1"):
                    with api._lock:
                        items = [p for p in api.pods.values() if node is None or p["spec"]["nodeName"] == node]
                        rv = api._rv
                    return self._json(200, {"kind": "PodList", "apiVersion": "v1",
                                            "metadata": {"resourceVersion": str(rv)}, "items": items})
                return self._watch(node, int(query.get("resourceVersion") or 0), float(query.get("timeoutSeconds") or 1800),
                                   query.get("allowWatchBookmarks") == "true")

            def _chunk(self, data: bytes) -> None:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                self.wfile.flush()

            def _watch(self, node, since: int, timeout: float, bookmarks: bool):
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                with api._lock:
                    api._watch_sockets.append(self.connection)
                end = time.monotonic() + timeout
                clean = False  # a stream that ended with its last chunk keeps the connection (as the API server's Go
                # net/http does); closing it made the client's next request on the pooled connection fail at random
                try:
                    with api._lock:
                        if since and since < api._compacted:
                            msg = f"too old resource version: {since} ({api._compacted})"
                            self._chunk(json.dumps({"type": "ERROR", "object": _status(410, "Expired", msg)}).encode() + b"\n")
                            self._chunk(b"")
                            clean = True
                            return
                    sent = since
                    while time.monotonic() < end:
                        with api._lock:
                            if self.connection not in api._watch_sockets:
                                return  # dropped by the test: the socket is already shut down
                            pending = [(rv, t, o) for rv, t, o in api._history if rv > sent]
                            if not pending:
                                api._lock.wait(min(0.1, max(0.0, end - time.monotonic())))
                                continue
                        for rv, etype, obj in pending:
                            sent = rv
                            if node is not None and obj["spec"]["nodeName"] != node:
                                continue
                            self._chunk(json.dumps({"type": etype, "object": obj}).encode() + b"\n")
                    if bookmarks:
                        with api._lock:
                            rv = api._rv
                        self._chunk(json.dumps({"type": "BOOKMARK", "object": {"kind": "Pod", "apiVersion": "v1",
                                    "metadata": {"resourceVersion": str(rv)}}}).encode() + b"\n")
                    self._chunk(b"")  # the server's timeout: the stream ends cleanly
                    clean = True
                except OSError:
                    return
                finally:
                    with api._lock:
                        if self.connection in api._watch_sockets:
                            api._watch_sockets.remove(self.connection)
                        else:
                            clean = False  # dropped by the test: the socket is shut down
                    self.close_connection = not clean

        return Handler


def node(name: str, labels: dict[str, str]) -> dict:
    """A Node as the API server returns it (the fields the agent reads, and a few it does not)."""
    return {"kind": "Node", "apiVersion": "v1",
            "metadata": {"name": name, "uid": str(uuid.uuid4()), "resourceVersion": "7", "labels": dict(labels)},
            "spec": {"podCIDR": "10.244.1.0/24"},
            "status": {"nodeInfo": {"kernelVersion": "6.18.0", "containerRuntimeVersion": "containerd://1.7.13"}}}


def self_signed(directory) -> tuple[str, str, str]:
    """(certificate, key, CA bundle) for 127.0.0.1, made with the openssl command line; the
    certificate is its own CA."""
    import subprocess
    from pathlib import Path

    d = Path(directory)
    cert, key = d / "apiserver.crt", d / "apiserver.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=kube-apiserver",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-addext", "basicConstraints=critical,CA:TRUE",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return str(cert), str(key), str(cert)
