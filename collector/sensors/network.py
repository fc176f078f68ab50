"""Network sensor: network_connect, network_accept, network_close and dns_query events from
bpf/network/network.bpf.c.

TCP over IPv4 and IPv6, UDP flows (network_flow: collector/sensors/udp_flows.py), and the DNS queries processes send over UDP to port 53 (sendto, sendmsg,
sendmmsg; the kernel copies a bounded prefix of each datagram, collector/sensors/dns.py parses it). The kernel side remembers, per socket, the process that connected or accepted
(the only moments the running task is the right one), reports the connection once it is established,
and its close with the byte counters of the tcp_sock and the time it was open. Filters (remote CIDRs,
destination ports, loopback) are applied in the kernel and can be replaced at run time.

Direction decides source and destination: outbound, the source is this host's end; inbound, the
source is the peer that connected to us and the destination our listening address and port.
"""

from __future__ import annotations

import ipaddress
import logging

from pydantic import Field, field_validator

from siemhub.collector.core.event import SCHEMA_VERSION, Dns, Event, Network, Process
from siemhub.collector.core.kernel_settings import KernelFilters
from siemhub.collector.core.settings import (PendingConfig, Strict, check_cidrs, check_ports,
                                            power_of_two as _power_of_two, settle_field)
from siemhub.collector.kernel.maps import u32 as _u32
from siemhub.collector.sensors import BPFUnavailable, SensorContext
from siemhub.collector.sensors import messages as m
from siemhub.collector.sensors.attribution import ProcessJoin
from siemhub.collector.sensors.dns import parse_query
from siemhub.collector.sensors.kernel import KernelSensor
from siemhub.collector.sensors.udp_flows import UdpFlows

log = logging.getLogger("siemhub.sensors.network")


# --- settings (`sensors.network`) ---------------------------------------------------------------


class NetworkIgnoreConfig(Strict):
    cidrs: list[str] = Field([], description="remote addresses (CIDR or address, IPv4 or IPv6) never reported")
    ports: list[int] = Field([], description="destination ports never reported (the remote port of an "
                                             "outbound connection, the local port of an inbound one)")
    loopback: bool = Field(False, description="drop connections to 127.0.0.0/8 and ::1 in the kernel")

    _cidrs = field_validator("cidrs")(classmethod(lambda cls, v: check_cidrs(v)))
    _ports = field_validator("ports")(classmethod(lambda cls, v: check_ports(v)))


# --- UDP flows (issue 18): counted in the kernel, reported per (process, socket, peer) ---
class UdpFlowConfig(Strict):
    enabled: bool = Field(True, description="report UDP flows (network_flow events, transport udp)")
    report_interval: float = Field(60.0, gt=0, description="seconds between reports of a flow that is still open "
                                   "(it is reported again only if it carried datagrams since)")
    idle_timeout: float = Field(300.0, gt=0, description="a flow without datagrams this long is reported as ended "
                                "(flow_end idle) and forgotten; its next datagram starts a new one")
    max_flows: int = Field(16384, ge=256, description="flows counted at once in the kernel; beyond, the new "
                           "ones are counted as lost (ringbuf_lost_udp)")


class NetworkSensorConfig(Strict):
    ringbuf_pages: int = Field(1024, ge=16, description="ring buffer size in 4 KiB pages (power of two)")
    wakeup_every: int = Field(64, ge=1, le=4096, description="force a wake-up every N messages (power of two)")
    poll_interval: float = Field(0.1, gt=0, le=5, description="seconds between ring buffer polls")
    max_connections: int = Field(65536, ge=1024, description="open connections tracked for their close")
    settle: float = settle_field()
    ignore: NetworkIgnoreConfig = NetworkIgnoreConfig()
    pending: PendingConfig = PendingConfig()
    udp: UdpFlowConfig = UdpFlowConfig()

    _p2 = field_validator("ringbuf_pages", "wakeup_every")(classmethod(lambda cls, v: _power_of_two(v)))


OFFSETS = {
    "OFF_TASK_START_BOOTTIME": ("task_struct", "start_boottime"),
    "OFF_TASK_GROUP_LEADER": ("task_struct", "group_leader"),
    "OFF_TASK_FILES": ("task_struct", "files"),
    "OFF_FILES_FDT": ("files_struct", "fdt"),
    "OFF_FDT_FD": ("fdtable", "fd"),
    "OFF_FILE_PRIVATE_DATA": ("file", "private_data"),
    "OFF_SOCKET_SK": ("socket", "sk"),
    "OFF_SOCK_PROTOCOL": ("sock", "sk_protocol"),
    "OFF_SOCK_TYPE": ("sock", "sk_type"),
    "OFF_SKC_FAMILY": ("sock", "__sk_common.skc_family"),
    "OFF_SKC_DADDR": ("sock", "__sk_common.skc_daddr"),
    "OFF_SKC_RCV_SADDR": ("sock", "__sk_common.skc_rcv_saddr"),
    "OFF_SKC_DPORT": ("sock", "__sk_common.skc_dport"),
    "OFF_SKC_NUM": ("sock", "__sk_common.skc_num"),
    "OFF_SKC_V6_DADDR": ("sock", "__sk_common.skc_v6_daddr"),
    "OFF_SKC_V6_RCV_SADDR": ("sock", "__sk_common.skc_v6_rcv_saddr"),
    "OFF_TCP_BYTES_ACKED": ("tcp_sock", "bytes_acked"),
    "OFF_TCP_BYTES_RECEIVED": ("tcp_sock", "bytes_received"),
    "OFF_TCP_SND_UNA": ("tcp_sock", "snd_una"),
    "OFF_TCP_WRITE_SEQ": ("tcp_sock", "write_seq"),
    "OFF_SOCK_SHUTDOWN": ("sock", "sk_shutdown"),
    "OFF_FILE_INODE": ("file", "f_inode"),
    "OFF_INODE_MODE": ("inode", "i_mode"),
    # UDP flows: the running syscall and its arguments (saved registers, x86-64), the exit of a process
    "OFF_REGS_ORIG_AX": ("pt_regs", "orig_ax"),
    "OFF_REGS_DI": ("pt_regs", "di"),
    "OFF_REGS_SI": ("pt_regs", "si"),
    "OFF_REGS_R8": ("pt_regs", "r8"),
    "OFF_TASK_SIGNAL": ("task_struct", "signal"),
    "OFF_SIGNAL_LIVE": ("signal_struct", "live"),
}

_MAPS = ["events", "lost", "filtered", "ignore_cidrs", "ignore_ports", "filters_on"]
_KINDS = {m.NET_CONNECT: "connect", m.NET_ACCEPT: "accept", m.NET_CLOSE: "close", m.NET_DNS: "dns", 5: "udp"}
_TYPES = {m.NET_CONNECT: "network_connect", m.NET_ACCEPT: "network_accept", m.NET_CLOSE: "network_close"}
_FAMILIES = {2: "ipv4", 10: "ipv6"}
_LOOPBACK = ["127.0.0.0/8", "::1/128"]
_NET_UNPACK = m.NET.unpack_from
_NET_SIZE = m.NET.size
_DNS_UNPACK = m.DNS.unpack_from
_DNS_SIZE = m.DNS.size





def cidr_key(cidr: str) -> bytes:
    """The LPM-trie key of a CIDR: u32 prefix length, then 16 address bytes (IPv4 as ::ffff:a.b.c.d)."""
    net = ipaddress.ip_network(cidr, strict=False)
    if net.version == 4:
        return _u32(96 + net.prefixlen) + b"\0" * 10 + b"\xff\xff" + net.network_address.packed
    return _u32(net.prefixlen) + net.network_address.packed


def address(family: int, raw: bytes) -> str:
    if family == 2:
        return str(ipaddress.IPv4Address(raw[:4]))
    return str(ipaddress.IPv6Address(raw))


class NetworkSensor(KernelSensor):
    name = "network"
    config_model = NetworkSensorConfig
    program = "network/network.bpf.c"
    lost_kinds = _KINDS
    counts_filtered = True

    def __init__(self, config: NetworkSensorConfig, ctx: SensorContext) -> None:
        super().__init__(config, ctx)
        self.join = ProcessJoin(ctx.cache, config.settle, config.pending.max_events, config.pending.max_wait)
        self._addr_cache: dict[bytes, str] = {}
        self.udp = UdpFlows(self, config.udp) if config.udp.enabled else None

    # --- lifecycle ---

    def load(self) -> None:
        c = self.config
        defines = {"SH_RINGBUF_PAGES": c.ringbuf_pages, "SH_WAKEUP_EVERY": c.wakeup_every,
                   "SH_MAX_CONNS": c.max_connections}
        maps = _MAPS
        if c.udp.enabled:
            defines["SH_MAX_UDP_FLOWS"] = c.udp.max_flows
            maps = [*_MAPS, "udp_flows"]
        else:
            defines["SH_NO_UDP_FLOWS"] = 1
        try:
            self._open(OFFSETS, defines, maps, c.ringbuf_pages)
        except BPFUnavailable as exc:
            if self.udp is None or "failed" not in str(exc):
                raise
            # UDP flows need bpf_task_pt_regs (Linux 5.15) and the sock_*_length tracepoints (6.3): the rest
            # of the sensor works without them.
            log.warning("network sensor: UDP flows unavailable on this kernel (%s); set "
                        "sensors.network.udp.enabled: false to silence this", exc)
            self.udp = None
            defines.pop("SH_MAX_UDP_FLOWS", None)
            self._open(OFFSETS, {**defines, "SH_NO_UDP_FLOWS": 1}, _MAPS, c.ringbuf_pages)
        self.set_filters(c.ignore.cidrs, c.ignore.ports, c.ignore.loopback)

    # --- the policy hook ---

    def kernel_settings(self, config: NetworkSensorConfig, k: KernelFilters) -> tuple:
        ig = config.ignore
        return (list(dict.fromkeys([*ig.cidrs, *k.network_cidrs])), list(dict.fromkeys([*ig.ports, *k.network_ports])),
                ig.loopback)

    def check_kernel_settings(self, cidrs: list[str], ports: list[int], loopback: bool = False) -> list[bytes]:
        return self.check_filters(cidrs, ports, loopback)

    def apply_kernel_settings(self, cidrs: list[str], ports: list[int], loopback: bool = False) -> None:
        self.set_filters(cidrs, ports, loopback)

    def check_filters(self, cidrs: list[str], ports: list[int], loopback: bool = False) -> list[bytes]:
        """The trie keys set_filters would install, without changing anything (ValueError on a bad CIDR
        or port): lets a reload check every sensor before it changes any."""
        bad = [p for p in ports if not 0 <= p < 65536]
        if bad:
            raise ValueError(f"ignore.ports: not a port: {bad}")
        return [cidr_key(c) for c in [*cidrs, *(_LOOPBACK if loopback else [])]]

    def set_filters(self, cidrs: list[str], ports: list[int], loopback: bool = False) -> None:
        """Replace the in-kernel ignore lists (start-up and run time)."""
        keys = self.check_filters(cidrs, ports, loopback)  # raises before any change
        maps = self._bpf.maps
        trie, port_map = maps["ignore_cidrs"], maps["ignore_ports"]
        trie.clear()
        for k in keys:
            trie.update(k, b"\x01")
        wanted = set(ports)
        for p in getattr(self, "_ports", set()) - wanted:
            port_map.update(_u32(p), b"\x00")
        for p in wanted:
            port_map.update(_u32(p), b"\x01")
        self._ports = wanted
        maps["filters_on"].update(_u32(0), _u32(1 if keys or wanted else 0))
        state = (tuple(keys), frozenset(wanted))
        self.log_once(log, "filters", state, "network sensor: ignoring %d address ranges and %d ports in the kernel",
                      len(keys), len(wanted))

    # --- UDP flows (collector/sensors/udp_flows.py) ---

    def flow_map(self):
        return self._bpf.maps.get("udp_flows") if self._bpf is not None else None

    def ready(self, raw: list[bytes]) -> list[Event]:
        if raw:
            self.decode(raw)
        if self.udp is not None:
            self.udp.tick()
        return self.join.ready()

    def flush(self) -> list[Event]:
        if self.udp is not None and self._bpf is not None:
            self.udp.flush()
        return self.join.ready(force=True)

    def counters(self) -> dict[str, int]:
        out = super().counters()
        if self.udp is not None:
            out["udp_flows_reported"] = self.udp.reported
            out["udp_flows_open"] = len(self.udp.flows)
        out["missing_process"] = self.join.missing
        out["settle_expired"] = self.join.settle_expired
        out["pending_expired"] = self.join.pending.expired
        return out

    # --- decoding (pure apart from the cache; tests feed it raw messages) ---

    def decode(self, raw: list[bytes]) -> None:
        """Decode kernel messages; their events come out of self.join.ready() once their process is known."""
        for msg in raw:
            try:
                t = msg[0]
                if t == m.MSG_NET:
                    self._net(msg)
                elif t == m.MSG_DNS:
                    self._dns(msg)
                elif t == m.MSG_UDP and self.udp is not None:
                    self.udp.message(msg)
                else:
                    raise ValueError("unknown_type")
            except Exception as exc:  # noqa: BLE001 - a malformed message must not stop the stream
                self.decode_errors += 1
                self._m_decode.labels(self.name, str(exc) if isinstance(exc, ValueError) else type(exc).__name__).inc()

    def _addr(self, family: int, raw: bytes) -> str:
        key = raw if family == 10 else raw[:4]
        s = self._addr_cache.get(key)
        if s is None:
            if len(self._addr_cache) > 4096:
                self._addr_cache.clear()
            s = self._addr_cache[key] = address(family, raw)
        return s

    def _net(self, msg: bytes) -> None:
        (_, size, ktime, pid, tid, start_ns, _sock, sent, received, open_ktime, kind, kflags, family,
         lport, rport, laddr, raddr) = _NET_UNPACK(msg)
        if size != len(msg) or size != _NET_SIZE:
            raise ValueError("length_mismatch")
        etype = _TYPES.get(kind)
        fam = _FAMILIES.get(family)
        if etype is None or fam is None:
            raise ValueError("unknown_kind")
        local, remote = self._addr(family, laddr), self._addr(family, raddr)
        outbound = bool(kflags & m.NET_OUTBOUND)
        if outbound:
            body = Network(protocol="tcp", family=fam, direction="outbound", source_ip=local, source_port=lport,
                           destination_ip=remote, destination_port=rport)
        else:
            body = Network(protocol="tcp", family=fam, direction="inbound", source_ip=remote, source_port=rport,
                           destination_ip=local, destination_port=lport)
        if kind == m.NET_CLOSE:
            body.bytes_sent = sent
            body.bytes_received = received
            body.duration_ns = ktime - open_ktime if open_ktime and ktime >= open_ktime else None
        ctx = self.ctx
        when = ctx.clock.from_boot(ktime)

        def build(proc: Process, parent: Process | None) -> Event:
            return Event(id=ctx.ids.new(), time=when, type=etype, schema_version=SCHEMA_VERSION, severity="info",
                         node=ctx.node, process=proc, parent=parent, network=body)

        self.join.add(ktime, pid, tid, start_ns, build)

    def _dns(self, msg: bytes) -> None:
        (_, size, ktime, pid, tid, start_ns, sent, family, lport, rport, copied, _call, _index, kflags,
         laddr, raddr, payload) = _DNS_UNPACK(msg)
        if size != len(msg) or size != _DNS_SIZE or copied > m.DNS_PAYLOAD:
            raise ValueError("length_mismatch")
        fam = _FAMILIES.get(family)
        if fam is None:
            raise ValueError("unknown_kind")
        # `sent` counts the first iovec only: with more, the datagram goes on past what was copied
        more = kflags & m.DNS_MORE_IOV
        qid, name, qtype, flags = parse_query(payload[:copied], max(sent, copied + 1) if more else sent)
        if more:
            flags.append("split_payload")
        if kflags & m.DNS_UNREADABLE:
            flags.append("unreadable_payload")
        local = self._addr(family, laddr)
        body = Network(protocol="udp", family=fam, direction="outbound",
                       source_ip=local if local not in ("0.0.0.0", "::") else None, source_port=lport or None,
                       destination_ip=self._addr(family, raddr), destination_port=rport,
                       dns_query=name, dns=Dns(id=qid, type=qtype, flags=flags))
        ctx = self.ctx
        when = ctx.clock.from_boot(ktime)

        def build(proc: Process, parent: Process | None) -> Event:
            return Event(id=ctx.ids.new(), time=when, type="dns_query", schema_version=SCHEMA_VERSION,
                         severity="info", node=ctx.node, process=proc, parent=parent, network=body)

        self.join.add(ktime, pid, tid, start_ns, build)
