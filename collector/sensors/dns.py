"""The question of a DNS query, parsed from the bounded payload prefix the network sensor copies.

Pure functions over bytes (RFC 1035 section 4.1): the header's id, flags and counts, then the first
question's name, type and class. Nothing here trusts the input: every label length is checked against
what was copied, compression pointers (never valid in a query's first question) and oversized names are
reported as `malformed`, and a name cut by the copy limit is `truncated_name`, never silently shortened.

Names come out in DNS presentation form (as dig prints them), without the trailing dot: `.` and `\\`
inside a label are escaped with a backslash, and bytes outside printable ASCII (space included) become
`\\DDD` (decimal), which sets `escaped_name`. So a hostile name cannot inject control characters, and
the text still says exactly which bytes were sent.
"""

from __future__ import annotations

import struct

# question types by number (IANA "Resource Record (RR) TYPEs"); others print as TYPE<n> (RFC 3597)
QTYPES = {
    1: "A", 2: "NS", 5: "CNAME", 6: "SOA", 10: "NULL", 12: "PTR", 13: "HINFO", 15: "MX", 16: "TXT",
    17: "RP", 18: "AFSDB", 24: "SIG", 25: "KEY", 28: "AAAA", 29: "LOC", 33: "SRV", 35: "NAPTR", 36: "KX",
    37: "CERT", 39: "DNAME", 42: "APL", 43: "DS", 44: "SSHFP", 45: "IPSECKEY", 46: "RRSIG", 47: "NSEC",
    48: "DNSKEY", 49: "DHCID", 50: "NSEC3", 51: "NSEC3PARAM", 52: "TLSA", 53: "SMIMEA", 55: "HIP",
    59: "CDS", 60: "CDNSKEY", 61: "OPENPGPKEY", 62: "CSYNC", 63: "ZONEMD", 64: "SVCB", 65: "HTTPS",
    99: "SPF", 108: "EUI48", 109: "EUI64", 249: "TKEY", 250: "TSIG", 251: "IXFR", 252: "AXFR", 255: "ANY",
    256: "URI", 257: "CAA",
}
QCLASSES = {1: "IN", 3: "CH", 4: "HS", 254: "NONE", 255: "ANY"}
_HEADER = struct.Struct(">HHH")
_TAIL = struct.Struct(">HH")
NAME_MAX = 255  # octets of a name on the wire, length bytes and the root label included

# byte -> its presentation form
_PRESENT = [f"\\{b:03d}" for b in range(256)]
for _b in range(0x21, 0x7F):
    _PRESENT[_b] = chr(_b)
_PRESENT[ord(".")] = "\\."
_PRESENT[ord("\\")] = "\\\\"


def qtype_name(code: int) -> str:
    return QTYPES.get(code) or f"TYPE{code}"


def parse_query(payload: bytes, sent: int) -> tuple[int | None, str | None, str | None, list[str]]:
    """(id, name, type, flags) of the datagram whose first len(payload) of `sent` bytes were copied.

    name and type are None when the datagram does not hold them (too short, malformed, cut off)."""
    flags: list[str] = []
    cut = len(payload) < sent  # the copy stopped before the end of the datagram
    if len(payload) < 12:
        flags.append("truncated_payload" if cut else "malformed")
        return None, None, None, flags
    qid, hflags, qdcount = _HEADER.unpack_from(payload)
    if hflags & 0x8000:
        flags.append("response")
    opcode = (hflags >> 11) & 0xF
    if opcode:
        flags.append(f"opcode_{opcode}")
    if qdcount == 0:
        flags.append("no_question")
        return qid, None, None, flags
    if qdcount > 1:
        flags.append("multiple_questions")

    labels: list[str] = []
    pos = 12
    wire = 1  # the root label's length byte
    escaped = False
    end = len(payload)
    while True:
        if pos >= end:
            flags.append("truncated_name" if cut else "malformed")
            return qid, _join(labels), None, _escaped(flags, escaped)
        n = payload[pos]
        if n == 0:
            pos += 1
            break
        if n & 0xC0 or wire + 1 + n > NAME_MAX:  # a pointer or a reserved label type; or too long
            flags.append("malformed")
            return qid, _join(labels), None, _escaped(flags, escaped)
        label = payload[pos + 1:pos + 1 + n]
        text = label.decode("ascii", "replace") if label.isascii() and label.isalnum() else None
        if text is None:
            text = "".join([_PRESENT[b] for b in label])
            escaped = escaped or any(b < 0x21 or b > 0x7E for b in label)
        labels.append(text)
        wire += 1 + n
        if len(label) < n:
            flags.append("truncated_name" if cut else "malformed")
            return qid, _join(labels), None, _escaped(flags, escaped)
        pos += 1 + n
    name = _join(labels) if labels else "."
    if pos + 4 > end:
        flags.append("truncated_payload" if cut else "malformed")
        return qid, name, None, _escaped(flags, escaped)
    qtype, qclass = _TAIL.unpack_from(payload, pos)
    if qclass != 1:
        flags.append(f"class_{QCLASSES.get(qclass) or qclass}")
    return qid, name, qtype_name(qtype), _escaped(flags, escaped)


def _join(labels: list[str]) -> str | None:
    return ".".join(labels) if labels else None


def _escaped(flags: list[str], escaped: bool) -> list[str]:
    if escaped:
        flags.append("escaped_name")
    return flags
