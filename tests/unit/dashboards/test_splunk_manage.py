"""`siemhub dashboards install --splunk-url` and `siemhub splunk check` through splunk-sdk (splunklib),
against tests/servers/splunkd.py: a stand-in for Splunk's management REST API (no Splunk can be
installed here) that answers the endpoints splunklib calls with the shapes Splunk documents."""

from __future__ import annotations

import configparser

import pytest
from click.testing import CliRunner

from siemhub.collector.cli import main as cli
from siemhub.dashboards import splunk as app
from siemhub.dashboards.splunk import manage
from tests.servers.splunkd import SplunkdStandIn

TOKEN = "eyJraWQiOiJzcGx1bmsuc2VjcmV0In0.test-token"


@pytest.fixture
def splunkd():
    with SplunkdStandIn(token=TOKEN) as s:
        yield s


def test_install_creates_app_index_searches_and_dashboard(splunkd):
    service = manage.connect(splunkd.url, username="admin", password="changeme")
    report = manage.install(service, index="secops")
    assert app.APP in splunkd.apps and "secops" in splunkd.indexes
    files = app.render(index="secops")
    for conf in manage.CONF_FILES:
        cp = configparser.ConfigParser(interpolation=None, delimiters=("=",))
        cp.optionxform = str
        cp.read_string(files[f"default/{conf}.conf"])
        stored = splunkd.confs[(app.APP, conf)]
        assert set(stored) == set(cp.sections())
        for s in cp.sections():
            assert stored[s] == dict(cp[s])
    saved = splunkd.confs[(app.APP, "savedsearches")]
    assert len(saved) >= 8 and all(s.startswith("siemhub - ") for s in saved)
    assert splunkd.views[(app.APP, app.VIEW)] == files[f"default/data/ui/views/{app.VIEW}.xml"]
    assert report.objects["app"] == "created" and report.objects["index"] == "created"
    assert report.objects["created"] == sum(len(v) for v in splunkd.confs.values()) + 1
    # every object request went to the app's namespace, shared (owner nobody)
    paths = [p for _, p, _ in splunkd.requests if "conf-" in p or "views" in p]
    assert paths and all(p.startswith(f"/servicesNS/nobody/{app.APP}/") for p in paths)
    # idempotent: a second run updates in place
    again = manage.install(service, index="secops")
    assert "app" not in again.objects and again.objects.get("created", 0) == 0
    assert again.objects["updated"] == report.objects["created"]


def test_token_auth_and_refused_credentials(splunkd):
    service = manage.connect(splunkd.url, token=TOKEN)
    manage.install(service)
    assert all(h == f"Bearer {TOKEN}" for h in splunkd.auth_headers)
    with pytest.raises(manage.ManageError, match="refused the login"):
        manage.connect(splunkd.url, username="admin", password="wrong")
    bad = manage.connect(splunkd.url, token="not-it")
    with pytest.raises(manage.ManageError, match="HTTP 401"):
        manage.install(bad)
    with pytest.raises(manage.ManageError, match="token"):
        manage.connect(splunkd.url)


def test_cli_install_never_prints_the_secret(splunkd):
    result = CliRunner().invoke(cli, ["dashboards", "install", "--splunk-url", splunkd.url, "--splunk-username",
                                      "admin", "--splunk-password", "changeme"])
    assert result.exit_code == 0, result.output
    assert "splunk: app siemhub_app: created" in result.output and "changeme" not in result.output
    result = CliRunner().invoke(cli, ["dashboards", "install", "--splunk-url", splunkd.url],
                                env={"SPLUNK_TOKEN": "wrong-token"})
    assert result.exit_code == 1 and "HTTP 401" in result.output and "wrong-token" not in result.output


def test_check_reports_the_lag_per_agent(splunkd):
    splunkd.agent_rows["siemhub"] = [
        {"host": "node-b", "count": "4", "last_time": "1700000100", "lag_avg": "2.5", "lag_max": "4.1", "last_age": "30"},
        {"host": "node-a", "count": "5", "last_time": "1700000110", "lag_avg": "0.8", "lag_max": "1.2", "last_age": "20"},
    ]
    service = manage.connect(splunkd.url, token=TOKEN, namespace_app="search")
    agents = manage.check(service)
    assert [(a.host, a.events, a.lag_avg) for a in agents] == [("node-a", 5, 0.8), ("node-b", 4, 2.5)]
    q = splunkd.searches[-1]
    assert 'index="siemhub"' in q and 'sourcetype="siemhub:agent"' in q and "_indextime-_time" in q
    r = CliRunner().invoke(cli, ["splunk", "check", "--splunk-url", splunkd.url], env={"SPLUNK_TOKEN": TOKEN})
    assert r.exit_code == 0, r.output
    assert "node-a: 5 status events, last 20s ago, delivery lag mean 0.8s max 1.2s" in r.output
    r = CliRunner().invoke(cli, ["splunk", "check", "--splunk-url", splunkd.url, "--max-lag", "2"],
                           env={"SPLUNK_TOKEN": TOKEN})
    assert r.exit_code == 1 and "above --max-lag" in r.output
    r = CliRunner().invoke(cli, ["splunk", "check", "--splunk-url", splunkd.url, "--index", "empty"],
                           env={"SPLUNK_TOKEN": TOKEN})
    assert r.exit_code == 1 and "no agent_status events" in r.output


def test_tls_verification_is_on_by_default(tmp_path):
    from tests.servers.tlscert import self_signed

    cert, key = self_signed(tmp_path)
    with SplunkdStandIn(token=TOKEN, certfile=str(cert), keyfile=str(key)) as s:
        with pytest.raises(manage.ManageError, match="CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
            manage.install(manage.connect(s.url, token=TOKEN))  # self-signed: refused
        manage.install(manage.connect(s.url, token=TOKEN, ca_certs=str(cert)))  # trusted with its CA
        manage.install(manage.connect(s.url, token=TOKEN, insecure=True))  # or with verification off
        assert app.APP in s.apps
