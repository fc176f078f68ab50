"""`siemhub aggregate` serves /healthz and /readyz next to /metrics (the Deployment's probes in
deploy/kubernetes/overlays/kafka-aggregator): ready once its exporters started and it consumes, against
a real Kafka-protocol broker (Tansu)."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

from tests.integration.test_kafka import Aggregator, tansu  # noqa: F401 - the session fixture


def _get(url: str) -> tuple[int, dict | None]:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())
    except OSError:
        return 0, None


def test_aggregator_readyz_and_healthz(tansu, tmp_path):  # noqa: F811 - the fixture imported above
    tansu.create_topic("health-topic", partitions=1)
    agg = Aggregator(tmp_path, "agg", tansu.bootstrap, "health-topic", "health-group")
    try:
        base = f"http://127.0.0.1:{agg.metrics_port}"
        deadline = time.monotonic() + 30
        code, body = 0, None
        while time.monotonic() < deadline and code != 200:
            assert agg.proc.poll() is None, agg.log.read_text()[-2000:]
            code, body = _get(base + "/readyz")
            time.sleep(0.1)
        assert (code, body) == (200, {"status": "ready"}), agg.log.read_text()[-2000:]
        assert _get(base + "/healthz") == (200, {"status": "alive"})
        assert agg.metric("siemhub_exporter_queue_depth") == 0  # /metrics still served on the same port
    finally:
        assert agg.stop() == 0
