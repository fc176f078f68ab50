"""UDP flows of the network sensor: `network_flow` events (transport udp) per (process, socket, peer).

The kernel counts every datagram in the `udp_flows` map (bpf/network/network.bpf.c, "UDP flows": one
map update per datagram, no ring-buffer message) and sends a message only when a flow starts (its key,
its process and local address), when a descriptor of a socket with flows is closed, and when a process
with flows exits. This module keeps the index of the flows the kernel announced and reads their
counters:

- at a close (`flow_end: close`: the flows of that socket and process) or an exit (`exit`: the
  process' flows), with BPF_MAP_LOOKUP_AND_DELETE_ELEM, so a datagram that races the read starts a new
  flow instead of being lost;
- every `report_interval`: a flow that carried datagrams since its last report is reported again with
  its totals (no `flow_end`); one idle for `idle_timeout` is reported as ended (`idle`) and forgotten;
- at unload (`shutdown`).

Direction is the flow's first datagram's: sent first, the source is this host's end (outbound);
received first, the source is the peer (inbound). Events are named through the sensor's ProcessJoin
at the flow's first datagram (the image that ran then).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from siemhub.collector.core.event import SCHEMA_VERSION, Event, Network, Process
from siemhub.collector.sensors import messages as m

_UDP_UNPACK = m.UDP.unpack_from
_KEY = m.UDP_KEY
_VAL_UNPACK = m.UDP_VAL.unpack
_FAMILIES = {2: "ipv4", 10: "ipv6"}


@dataclass(slots=True)
class Flow:
    key: bytes
    pid: int
    tid: int
    start_ns: int
    sock: int
    network: dict  # the Network fields that do not change (protocol, family, direction, addresses, ports)
    first_ktime: int
    reported_last: int = 0  # last_ktime of the counters last reported
    extra: dict = field(default_factory=dict)


class UdpFlows:
    def __init__(self, sensor, config) -> None:
        self.sensor = sensor
        self.config = config
        self.flows: dict[bytes, Flow] = {}
        self._by_sock: dict[tuple[int, int], set[bytes]] = {}
        self._by_pid: dict[int, set[bytes]] = {}
        self._next_report = time.monotonic() + config.report_interval
        self.reported = 0  # network_flow events
        self.vanished = 0  # announced flows no longer in the map when read (should stay 0)

    # --- messages from the kernel ---

    def message(self, msg: bytes) -> None:
        (_, size, ktime, pid, tid, start_ns, sock, kind, kflags, family, lport, rport, laddr,
         raddr) = _UDP_UNPACK(msg)
        if size != len(msg) or size != m.UDP.size:
            raise ValueError("length_mismatch")
        if kind == m.UDP_NEW:
            self._new(ktime, pid, tid, start_ns, sock, kflags, family, lport, rport, laddr, raddr)
        elif kind == m.UDP_CLOSE:
            self.end(self._by_sock.get((sock, pid), ()), "close", ktime)
        elif kind == m.UDP_EXIT:
            self.end(self._by_pid.get(pid, ()), "exit", ktime)
        else:
            raise ValueError("unknown_kind")

    def _new(self, ktime, pid, tid, start_ns, sock, kflags, family, lport, rport, laddr, raddr) -> None:
        fam = _FAMILIES.get(family)
        if fam is None:
            raise ValueError("unknown_kind")
        sensor = self.sensor
        # the kernel's key: the peer port as stored (network byte order), the address as copied
        key = _KEY.pack(sock, pid, family, ((rport & 0xFF) << 8) | (rport >> 8), raddr)
        local = sensor._addr(family, laddr)  # the socket's family is the peer's (the kernel refuses others)
        if local in ("0.0.0.0", "::"):
            local = None
        remote = sensor._addr(family, raddr) if rport or any(raddr) else None
        mine = {"ip": local, "port": lport or None}
        peer = {"ip": remote, "port": rport or None}
        if kflags & m.UDP_SENT_FIRST:
            src, dst, direction = mine, peer, "outbound"
        else:
            src, dst, direction = peer, mine, "inbound"
        net = {"protocol": "udp", "family": fam, "direction": direction, "source_ip": src["ip"],
               "source_port": src["port"], "destination_ip": dst["ip"], "destination_port": dst["port"]}
        old = self.flows.get(key)
        if old is not None:  # the same key again: the kernel forgot it (read and deleted) and it restarted
            self._unindex(old)
        f = Flow(key, pid, tid, start_ns, sock, net, ktime)
        self.flows[key] = f
        self._by_sock.setdefault((sock, pid), set()).add(key)
        self._by_pid.setdefault(pid, set()).add(key)

    def _unindex(self, f: Flow) -> None:
        self.flows.pop(f.key, None)
        for index, k in ((self._by_sock, (f.sock, f.pid)), (self._by_pid, f.pid)):
            keys = index.get(k)
            if keys is not None:
                keys.discard(f.key)
                if not keys:
                    del index[k]

    # --- reading the counters ---

    def end(self, keys, reason: str, ktime: int | None = None) -> None:
        """Read and forget these flows, reporting each as ended for `reason`."""
        bmap = self.sensor.flow_map()
        for key in list(keys):
            f = self.flows.get(key)
            if f is None:
                continue
            self._unindex(f)
            raw = bmap.lookup_and_delete(key) if bmap is not None else None
            if raw is None:
                self.vanished += 1
                continue
            self._report(f, _VAL_UNPACK(raw), reason, ktime)

    def tick(self, now: float | None = None) -> None:
        """Every report_interval: report flows with new datagrams, end those idle for idle_timeout."""
        now = time.monotonic() if now is None else now
        if now < self._next_report or not self.flows:
            if now >= self._next_report:
                self._next_report = now + self.config.report_interval
            return
        self._next_report = now + self.config.report_interval
        bmap = self.sensor.flow_map()
        if bmap is None:
            return
        boot_now = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
        idle_ns = int(self.config.idle_timeout * 1e9)
        idle = []
        for key, f in list(self.flows.items()):
            raw = bmap.lookup(key)
            if raw is None:
                self._unindex(f)
                self.vanished += 1
                continue
            val = _VAL_UNPACK(raw)
            last = val[5]
            if boot_now - last >= idle_ns:
                idle.append(key)
            elif last != f.reported_last:
                self._report(f, val, None, None)
        if idle:
            self.end(idle, "idle")

    def flush(self) -> None:
        self.end(list(self.flows), "shutdown")

    def _report(self, f: Flow, val: tuple, reason: str | None, ktime: int | None) -> None:
        sent, received, dsent, dreceived, first, last = val
        f.reported_last = last
        ctx = self.sensor.ctx
        clock = ctx.clock
        body = Network(**f.network, bytes_sent=sent, bytes_received=received, datagrams_sent=dsent,
                       datagrams_received=dreceived, first_seen=clock.from_boot(first),
                       last_seen=clock.from_boot(last), duration_ns=last - first, flow_end=reason)
        when = clock.from_boot(ktime if ktime else last)
        self.reported += 1

        def build(proc: Process, parent: Process | None) -> Event:
            return Event(id=ctx.ids.new(), time=when, type="network_flow", schema_version=SCHEMA_VERSION,
                         severity="info", node=ctx.node, process=proc, parent=parent, network=body)

        self.sensor.join.add(f.first_ktime, f.pid, f.tid, f.start_ns, build)
