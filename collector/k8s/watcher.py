"""Watch this node's pods on the API server with the official `kubernetes` client.

The loop is the API server's documented list-then-watch protocol
(https://kubernetes.io/docs/reference/using-api/api-concepts/#efficient-detection-of-changes):

  1. list the pods with `fieldSelector=spec.nodeName=<node>` (this node only: on a node of a large
     cluster that is tens of pods, not tens of thousands) and load them into the store;
  2. watch from the list's resourceVersion (bookmarks on), applying ADDED / MODIFIED / DELETED;
     when the server ends the watch (its `timeoutSeconds`), watch again from the last version seen;
  3. on `410 Gone` (the version was compacted away), list again (step 1);
  4. on a dropped connection or any other error, wait (exponential backoff with jitter, reset after
     a success) and watch again from the last version; a failed list is retried the same way;
  5. every `resync` seconds, list again anyway, so a missed event cannot linger.

A pod's owning workload is resolved through its controller: a ReplicaSet's owner (a Deployment) and a
Job's owner (a CronJob) are read once and cached for `owner_ttl` seconds. Without permission to read
them (403) or with the object gone (404), a ReplicaSet named `<deployment>-<pod-template-hash>` is
taken for its Deployment, and otherwise the ReplicaSet or Job itself is the workload.

Counters (siemhub_kubernetes_*): lists by reason, watch reconnects by reason, pods known.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time

from prometheus_client import Counter, Gauge

from siemhub.collector.k8s.config import KubernetesApiConfig
from siemhub.collector.k8s.pods import PodStore, controller_of, pod_info, select_annotations

log = logging.getLogger("siemhub.kubernetes")

_OWNER_READS = {"ReplicaSet": ("apps", "read_namespaced_replica_set"), "Job": ("batch", "read_namespaced_job")}


class ApiUnavailable(RuntimeError):
    """No API server to talk to (not in a cluster and no host configured)."""


def build_client(cfg: KubernetesApiConfig):
    """A configured kubernetes.client.ApiClient: in-cluster unless `host` is set."""
    from kubernetes import client, config as kconfig

    conf = client.Configuration()
    if cfg.host is None:
        try:
            kconfig.load_incluster_config(client_configuration=conf)
        except kconfig.ConfigException as exc:
            raise ApiUnavailable(f"not running in a Kubernetes pod ({exc})") from None
    else:
        conf.host = cfg.host.rstrip("/")
        if cfg.token:
            conf.api_key = {"authorization": cfg.token.get_secret_value()}
            conf.api_key_prefix = {"authorization": "Bearer"}
        if cfg.ca_file:
            conf.ssl_ca_cert = cfg.ca_file
        conf.verify_ssl = True  # never turned off: a rogue API server could name any pod
    conf.retries = False  # this loop retries with its own backoff and counts every attempt
    return client.ApiClient(conf)


class PodWatcher:
    def __init__(self, cfg: KubernetesApiConfig, node_name: str, store: PodStore, registry=None,
                 api_client=None) -> None:
        self.cfg = cfg
        self.node_name = node_name
        self.store = store
        self._api_client = api_client
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._watch = None
        self._owners: dict[tuple[str, str, str], tuple[float, tuple[str | None, str | None]]] = {}
        self.first_list = threading.Event()  # set after the first list attempt, success or not
        self.list_ok = False  # the last list succeeded
        self.error: str | None = None  # why the last list failed
        self.on_list = None  # called after every list attempt (the agent's mode follows it)
        self.on_node_labels = None  # called with the node's selected labels (kubernetes.api.node_labels)
        self._annotations = tuple(cfg.annotations)
        kw = {"registry": registry} if registry is not None else {}
        self.lists = Counter("siemhub_kubernetes_api_lists", "Full lists of this node's pods, by reason "
                             "(initial, gone, resync, error)", ["reason"], **kw)
        self.reconnects = Counter("siemhub_kubernetes_api_watch_restarts", "Pod watches started again, by reason "
                                  "(timeout, dropped, error)", ["reason"], **kw)
        self.pods = Gauge("siemhub_kubernetes_api_pods", "Pods of this node known from the API server", **kw)
        self.pods.set_function(lambda: len(self.store))

    # --- lifecycle ---

    def start(self) -> None:
        from kubernetes import client

        if self._api_client is None:
            self._api_client = build_client(self.cfg)
        self.core = client.CoreV1Api(self._api_client)
        self.apps = client.AppsV1Api(self._api_client)
        self.batch = client.BatchV1Api(self._api_client)
        self._thread = threading.Thread(target=self._run, name="kubernetes-pods", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        deadline = time.monotonic() + 5
        while self._thread is not None and self._thread.is_alive() and time.monotonic() < deadline:
            w = getattr(self, "_watch", None)
            if w is not None:
                w.stop()
                resp = getattr(w, "_resp", None)  # a watch blocked reading: unblock it now
                if resp is not None:
                    try:
                        (getattr(resp, "shutdown", None) or resp.close)()
                    except Exception:  # noqa: BLE001 - already closed
                        pass
            self._thread.join(0.05)

    # --- the loop ---

    def _run(self) -> None:
        from kubernetes import watch
        from kubernetes.client.exceptions import ApiException

        backoff = self.cfg.backoff_initial
        rv: str | None = None
        reason = "initial"
        next_resync = 0.0
        while not self._stop.is_set():
            if rv is None:
                try:
                    rv = self._list(reason)
                    next_resync = time.monotonic() + self.cfg.resync
                    backoff = self.cfg.backoff_initial
                except Exception as exc:  # noqa: BLE001 - any failure: back off and list again
                    self.list_ok = False
                    error = _describe(exc)
                    # a lasting failure (no RBAC, no route) is logged once, not every retry
                    (log.warning if error != self.error else log.debug)(
                        "kubernetes: listing this node's pods failed: %s (retrying with backoff, now %.1fs)",
                        error, backoff)
                    self.error = error
                    self.first_list.set()
                    self._notify()
                    reason = "error"
                    backoff = self._sleep(backoff)
                    continue
            self._watch = watch.Watch()
            why = "timeout"
            try:
                for ev in self._watch.stream(self.core.list_pod_for_all_namespaces,
                                             field_selector=f"spec.nodeName={self.node_name}",
                                             resource_version=rv, allow_watch_bookmarks=True,
                                             timeout_seconds=self.cfg.watch_timeout,
                                             _request_timeout=(10, self.cfg.watch_timeout + 30)):
                    rv = self._apply(ev) or rv
                    backoff = self.cfg.backoff_initial
                    if self._stop.is_set():
                        break
            except ApiException as exc:
                if exc.status == 410:
                    log.info("kubernetes: watch expired (410 Gone): listing the node's pods again")
                    rv, reason = None, "gone"
                    continue
                why = "error"
                self.error = _describe(exc)
                log.warning("kubernetes: pod watch failed: %s (retry in %.1fs)", self.error, backoff)
                backoff = self._sleep(backoff)
            except Exception as exc:  # noqa: BLE001 - a dropped connection, a timeout, a reset...
                if self._stop.is_set():
                    break
                why = "dropped"
                log.info("kubernetes: pod watch connection lost (%s); watching again in %.1fs", _describe(exc), backoff)
                backoff = self._sleep(backoff)
            self.reconnects.labels(why).inc()
            self.store.expire()
            if time.monotonic() >= next_resync:
                rv, reason = None, "resync"

    def _sleep(self, backoff: float) -> float:
        self._stop.wait(backoff * random.uniform(0.8, 1.2))
        return min(backoff * 2, self.cfg.backoff_max)

    def _list(self, reason: str) -> str:
        resp = self.core.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={self.node_name}",
                                                     _preload_content=False, _request_timeout=(10, 60))
        body = json.loads(resp.data)
        self.store.replace([self._info(p) for p in body.get("items") or ()])
        self.lists.labels(reason).inc()
        if not self.list_ok:
            log.info("kubernetes: %d pods on node %s from the API server", len(self.store), self.node_name)
        self.list_ok, self.error = True, None
        if self.cfg.node_labels and self.on_node_labels is not None:
            self._read_node()  # with each (re)list: a node's labels change rarely
        self.first_list.set()
        self._notify()
        return (body.get("metadata") or {}).get("resourceVersion") or "0"

    def _read_node(self) -> None:
        from kubernetes.client.exceptions import ApiException

        try:
            resp = self.core.read_node(self.node_name, _preload_content=False, _request_timeout=(10, 30))
            labels = (json.loads(resp.data).get("metadata") or {}).get("labels") or {}
        except (ApiException, OSError, ValueError) as exc:
            log.warning("kubernetes: cannot read node %s for its labels: %s (the ClusterRole needs get on nodes)",
                        self.node_name, _describe(exc))
            return
        self.on_node_labels(select_annotations(labels, tuple(self.cfg.node_labels)))

    def _notify(self) -> None:
        if self.on_list is not None:
            self.on_list()

    def _apply(self, ev: dict) -> str | None:
        etype, obj = ev.get("type"), ev.get("raw_object") or {}
        meta = obj.get("metadata") or {}
        if etype == "BOOKMARK":
            return meta.get("resourceVersion")
        if etype in ("ADDED", "MODIFIED"):
            self.store.put(self._info(obj))
        elif etype == "DELETED":
            self.store.delete(meta.get("uid", ""))
        return meta.get("resourceVersion")

    def _info(self, obj: dict):
        meta = obj.get("metadata") or {}
        return pod_info(obj, self._annotations, self._workload(meta.get("namespace", ""), controller_of(meta)))

    # --- owners ---

    def _workload(self, namespace: str, ctl: tuple[str, str] | None) -> tuple[str | None, str | None]:
        if ctl is None:
            return None, None  # a bare pod: no workload
        kind, name = ctl
        if kind not in _OWNER_READS:
            return kind, name  # StatefulSet, DaemonSet, or a custom controller: the owner itself
        key = (kind, namespace, name)
        hit = self._owners.get(key)
        now = time.monotonic()
        if hit is not None and hit[0] > now:
            return hit[1]
        result = self._owner_of(kind, namespace, name)
        self._owners[key] = (now + self.cfg.owner_ttl, result)
        if len(self._owners) > 4096:
            self._owners = {k: v for k, v in self._owners.items() if v[0] > now}
        return result

    def _owner_of(self, kind: str, namespace: str, name: str) -> tuple[str, str]:
        from kubernetes.client.exceptions import ApiException

        group, method = _OWNER_READS[kind]
        api = self.apps if group == "apps" else self.batch
        try:
            resp = getattr(api, method)(name, namespace, _preload_content=False, _request_timeout=(10, 30))
            owner = controller_of(json.loads(resp.data).get("metadata") or {})
        except (ApiException, OSError, ValueError) as exc:
            log.debug("kubernetes: cannot read %s %s/%s: %s", kind, namespace, name, _describe(exc))
            owner = None
            if kind == "ReplicaSet" and "-" in name:
                owner = ("Deployment", name.rsplit("-", 1)[0])  # <deployment>-<pod-template-hash>
        return owner if owner is not None else (kind, name)


def _describe(exc: BaseException) -> str:
    status = getattr(exc, "status", None)
    if status:
        return f"HTTP {status} {getattr(exc, 'reason', '') or ''}".strip()
    return " ".join(f"{type(exc).__name__}: {exc}".split())[:300]  # one line (ApiException's text has several)
