"""Splunk management through Splunk's own SDK (splunk-sdk, `splunklib`) and its REST API:

- `install()` (`siemhub dashboards install --splunk-url`): creates the app `siemhub_app` and the index
  if missing, then writes every stanza of the rendered app (props, eventtypes, tags, fields, macros,
  savedsearches: `configs/conf-<file>`, created or updated) and the Dashboard Studio view
  (`data/ui/views`). Running it again updates what is there: it is idempotent.
- `check()` (`siemhub splunk check`): searches Splunk for the agents' own `agent_status` events
  (sourcetype siemhub:agent) and reports, per agent, when the last one was indexed and the delivery lag
  (`_indextime - _time`).

TLS verification is on unless `insecure` (splunklib's own default is off, so it is passed explicitly);
`ca_certs` names a CA bundle. Credentials: an authentication token (`Authorization: Bearer`) or a
username and password (session login); they are never printed.
"""

from __future__ import annotations

import configparser
import re
import ssl
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from siemhub.dashboards import splunk as app

# conf files written stanza by stanza, in this order (the searches use the macro and the event types)
CONF_FILES = ("macros", "props", "fields", "eventtypes", "tags", "savedsearches")


class ManageError(RuntimeError):
    pass


def connect(url: str, *, token: str | None = None, username: str | None = None, password: str | None = None,
            ca_certs: str | None = None, insecure: bool = False, timeout: float = 30.0, namespace_app: str = app.APP):
    """A splunklib Service in the namespace of `namespace_app` (the siemhub app for install, `search` for
    check: it must work before the app is installed), owner nobody (shared objects)."""
    import splunklib.binding as binding
    import splunklib.client as client

    parts = urlsplit(url if "://" in url else f"https://{url}")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ManageError(f"--splunk-url must be an http(s) URL of the management port, e.g. https://splunk:8089 "
                          f"(got {url!r})")
    if not token and not (username and password):
        raise ManageError("give a token (--splunk-token / SPLUNK_TOKEN) or a username and password")
    kw: dict[str, Any] = {"scheme": parts.scheme, "host": parts.hostname, "port": parts.port or 8089,
                          "owner": "nobody", "app": namespace_app, "verify": not insecure, "autologin": True}
    context = None
    if parts.scheme == "https" and not insecure:
        context = ssl.create_default_context(cafile=ca_certs)
    kw["handler"] = binding.handler(timeout=timeout, verify=not insecure, context=context)
    if token:
        kw["splunkToken"] = token
    else:
        kw["username"], kw["password"] = username, password
    try:
        return client.connect(**kw)
    except binding.AuthenticationError:
        raise ManageError("Splunk refused the login (check the username and password)") from None
    except binding.HTTPError as exc:
        raise ManageError(f"Splunk answered HTTP {exc.status} to the login") from None
    except (OSError, ssl.SSLError) as exc:
        raise ManageError(f"cannot reach {parts.scheme}://{parts.hostname}:{kw['port']}: {exc}") from None


def _exists(service, path: str) -> bool:
    import splunklib.binding as binding

    try:
        service.get(path)
        return True
    except binding.HTTPError as exc:
        if exc.status == 404:
            return False
        raise


def _upsert(service, collection: str, name: str, params: dict[str, str]) -> str:
    """Create `name` in a REST collection, or update it when it exists; returns created/updated."""
    import splunklib.binding as binding

    try:
        service.post(collection, name=name, **params)
        return "created"
    except binding.HTTPError as exc:
        if exc.status != 409:  # 409: "An object with name=... already exists"
            raise
    service.post(collection + "/" + _quote(name), **params)
    return "updated"


def _quote(name: str):
    """One path segment, encoded once (splunklib encodes plain strings itself: a UrlEncoded is kept)."""
    from splunklib.binding import UrlEncoded

    return UrlEncoded(name, encode_slash=True)


def _stanzas(text: str) -> dict[str, dict[str, str]]:
    cp = configparser.ConfigParser(interpolation=None, strict=True, delimiters=("=",))
    cp.optionxform = str
    cp.read_string(text)
    return {s: dict(cp[s]) for s in cp.sections()}


@dataclass
class InstallReport:
    app: str
    index: str
    objects: dict[str, int]  # "created"/"updated" -> count

    def lines(self) -> list[str]:
        return [f"app {self.app}: {self.objects.get('app', 'present')}",
                f"index {self.index}: {self.objects.get('index', 'present')}",
                f"{self.objects.get('created', 0)} objects created, {self.objects.get('updated', 0)} updated"]


def install(service, index: str = "siemhub") -> InstallReport:
    import splunklib.binding as binding

    files = app.render(index=index)
    done: dict[str, Any] = {}
    try:
        if not _exists(service, f"apps/local/{app.APP}"):
            service.post("apps/local", name=app.APP, label="siemhub", visible="true",
                         description="siemhub eBPF security events")
            done["app"] = "created"
        if not _exists(service, "data/indexes/" + _quote(index)):
            service.post("data/indexes", name=index)
            done["index"] = "created"
        for conf in CONF_FILES:
            for stanza, kv in _stanzas(files[f"default/{conf}.conf"]).items():
                how = _upsert(service, f"configs/conf-{conf}", stanza, kv)
                done[how] = done.get(how, 0) + 1
        how = _upsert(service, "data/ui/views", app.VIEW, {"eai:data": files[f"default/data/ui/views/{app.VIEW}.xml"]})
        done[how] = done.get(how, 0) + 1
    except binding.HTTPError as exc:
        raise ManageError(f"Splunk refused a request: HTTP {exc.status} {_message(exc)}") from None
    except OSError as exc:
        raise ManageError(f"connection to Splunk failed: {exc}") from None
    return InstallReport(app.APP, index, done)


def _message(exc) -> str:
    text = str(exc)
    m = re.search(r"--\s*(.*)$", text, re.S)
    return (m.group(1) if m else text).strip()[:300]


@dataclass
class AgentLag:
    host: str
    events: int
    last_event_age: float  # seconds since the newest agent_status event's time
    lag_avg: float  # mean of _indextime - _time, seconds
    lag_max: float


CHECK_SEARCH = ('search index="{index}" sourcetype="siemhub:agent" earliest=-{window}s '
                '| eval lag=_indextime-_time '
                '| stats count max(_time) as last_time avg(lag) as lag_avg max(lag) as lag_max by host '
                '| eval last_age=now()-last_time')


def check(service, index: str = "siemhub", window: int = 900) -> list[AgentLag]:
    """Per agent (host): its agent_status events of the last `window` seconds and their delivery lag."""
    import splunklib.binding as binding
    import splunklib.results as results

    query = CHECK_SEARCH.format(index=index.replace('"', ""), window=int(window))
    try:
        stream = service.jobs.oneshot(query, output_mode="json", count=0)
    except binding.HTTPError as exc:
        raise ManageError(f"the search failed: HTTP {exc.status} {_message(exc)}") from None
    out = []
    for row in results.JSONResultsReader(stream):
        if isinstance(row, results.Message):
            if row.type in ("ERROR", "FATAL"):
                raise ManageError(f"the search failed: {row.message}")
            continue
        out.append(AgentLag(host=row.get("host", "?"), events=int(float(row.get("count", 0))),
                            last_event_age=float(row.get("last_age", "nan")), lag_avg=float(row.get("lag_avg", "nan")),
                            lag_max=float(row.get("lag_max", "nan"))))
    return sorted(out, key=lambda a: a.host)
