"""Minimal reader of the kernel's raw BTF (/sys/kernel/btf/vmlinux).

The kernel headers available at build time do not match the running kernel, so
the BPF programs are compiled with struct field offsets looked up here at
start-up (format: Linux Documentation/bpf/btf.rst).

Loading must be cheap, so ``load`` makes a single pass that only records where
each type record starts (records are variable length, so every one has to be
stepped over) and indexes STRUCT/UNION names. Members are decoded on lookup.
"""
from __future__ import annotations

import struct

__all__ = ["BTF", "BTFError", "resolve_offsets", "cflags", "release"]

DEFAULT_PATH = "/sys/kernel/btf/vmlinux"
BTF_MAGIC = 0xEB9F

# Kind numbers (btf.rst "Type encoding").
INT, PTR, ARRAY, STRUCT, UNION, ENUM, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT = range(1, 12)
FUNC, FUNC_PROTO, VAR, DATASEC, FLOAT, DECL_TAG, TYPE_TAG, ENUM64 = range(12, 20)
# Kinds that only qualify or rename another type: followed to reach the real one.
_ALIASES = frozenset((TYPEDEF, VOLATILE, CONST, RESTRICT, TYPE_TAG))
# Bytes after the 12-byte common header: fixed part, and bytes per vlen entry.
_FIXED = {INT: 4, ARRAY: 12, VAR: 4, DECL_TAG: 4}
_PER_VLEN = {STRUCT: 12, UNION: 12, ENUM: 8, FUNC_PROTO: 8, DATASEC: 12, ENUM64: 12}
_MAX_KIND = ENUM64

_cache: dict[str, "BTF"] = {}


class BTFError(Exception):
    """BTF data is malformed, or a struct/field cannot be resolved."""


class BTF:
    def __init__(self, data: bytes) -> None:
        if len(data) < 24:
            raise BTFError("BTF blob too short")
        # BTF is in the producer's native byte order; the magic tells which.
        for endian in "<>":
            if struct.unpack_from(endian + "H", data)[0] == BTF_MAGIC:
                break
        else:
            raise BTFError("bad BTF magic")
        self._u32, self._u32x3 = struct.Struct(endian + "I"), struct.Struct(endian + "III")
        hdr_len, type_off, type_len, str_off, str_len = struct.unpack_from(endian + "5I", data, 4)
        types_start, self._str_start = hdr_len + type_off, hdr_len + str_off
        if types_start + type_len > len(data) or self._str_start + str_len > len(data):
            raise BTFError("BTF section extends past end of data")
        self._data = data
        # Pass over the type section: _pos[type_id] = byte offset of its record
        # (id 0 is void), and name -> ids for the structs/unions only.
        pos_list = [0]
        names: dict[str, list[int]] = {}
        per_kind = [(_FIXED.get(k, 0), _PER_VLEN.get(k, 0)) for k in range(_MAX_KIND + 1)]
        unpack, strs, end = self._u32x3.unpack_from, data, types_start + type_len
        pos = types_start
        while pos < end:
            name_off, info, _ = unpack(data, pos)
            kind = (info >> 24) & 0x1F
            if not 0 < kind <= _MAX_KIND:
                raise BTFError(f"unknown BTF kind {kind} at type id {len(pos_list)}")
            pos_list.append(pos)
            if (kind == STRUCT or kind == UNION) and name_off:
                s = self._str_start + name_off
                name = strs[s:strs.index(b"\0", s)].decode()
                names.setdefault(name, []).append(len(pos_list) - 1)
            fixed, per = per_kind[kind]
            pos += 12 + fixed + per * (info & 0xFFFF)
        if pos != end:
            raise BTFError("type section does not end on a record boundary")
        self._pos, self._names = pos_list, names
        self._members: dict[int, list[tuple[str, int, int, int]]] = {}

    @classmethod
    def load(cls, path: str = DEFAULT_PATH) -> "BTF":
        """Parse ``path`` once per process; later calls return the cached instance."""
        btf = _cache.get(path)
        if btf is None:
            try:
                with open(path, "rb") as f:
                    data = f.read()
            except OSError as e:
                raise BTFError(f"cannot read BTF from {path}: {e}") from e
            btf = _cache[path] = cls(data)
        return btf

    # -- low-level decoding -------------------------------------------------
    def _type(self, tid: int) -> tuple[int, bool, int, int, int, int]:
        """(kind, kind_flag, vlen, name_off, size_or_type, record_pos) of a type id."""
        if not 0 < tid < len(self._pos):
            raise BTFError(f"invalid BTF type id {tid}")
        pos = self._pos[tid]
        name_off, info, size_or_type = self._u32x3.unpack_from(self._data, pos)
        return (info >> 24) & 0x1F, bool(info >> 31), info & 0xFFFF, name_off, size_or_type, pos

    def _str(self, off: int) -> str:
        s = self._str_start + off
        return self._data[s:self._data.index(b"\0", s)].decode()

    def _strip(self, tid: int) -> int:
        """Follow typedef/const/volatile/restrict/type_tag to the underlying type id."""
        for _ in range(64):  # bounded: a cycle would mean corrupt BTF
            if tid == 0 or self._type(tid)[0] not in _ALIASES:
                return tid
            tid = self._type(tid)[4]
        raise BTFError(f"type alias chain too long at id {tid}")

    def _is_bitfield_int(self, tid: int) -> bool:
        # Without kind_flag, a bitfield is an INT whose encoding has fewer bits
        # than its size or a non-zero bit offset (btf.rst "BTF_KIND_INT").
        kind, _, _, _, size, pos = self._type(tid)
        if kind != INT:
            return False
        enc = self._u32.unpack_from(self._data, pos + 12)[0]
        return (enc & 0xFF) != size * 8 or (enc >> 16) & 0xFF != 0

    def _members_of(self, tid: int) -> list[tuple[str, int, int, int]]:
        """Decoded (name, type_id, bit_offset, bitfield_size) of a struct/union, cached."""
        members = self._members.get(tid)
        if members is None:
            _, kflag, vlen, _, _, pos = self._type(tid)
            members = []
            for i in range(vlen):
                name_off, mtype, off = self._u32x3.unpack_from(self._data, pos + 12 + 12 * i)
                # kind_flag: high 8 bits are the bitfield size, low 24 the bit offset.
                bits, off = (off >> 24, off & 0xFFFFFF) if kflag else (0, off)
                if not kflag and self._is_bitfield_int(self._strip(mtype)):
                    bits = -1  # bitfield, size kept in the INT encoding
                members.append((self._str(name_off) if name_off else "", mtype, off, bits))
            self._members[tid] = members
        return members

    def _struct_id(self, name: str) -> int:
        ids = self._names.get(name)
        if not ids:
            raise BTFError(f"struct {name!r} not found in BTF")
        # Duplicates exist (e.g. an empty placeholder); the first complete one wins.
        for tid in ids:
            _, _, vlen, _, size, _ = self._type(tid)
            if size or vlen:
                return tid
        return ids[0]

    def _find(self, tid: int, name: str) -> tuple[int, int, int] | None:
        """(bit_offset, type_id, bitfield_size) of ``name`` in struct/union ``tid``,
        looking through anonymous struct/union members as C does."""
        members = self._members_of(tid)
        for mname, mtype, off, bits in members:
            if mname == name:
                return off, mtype, bits
        for mname, mtype, off, _ in members:
            if not mname:
                inner = self._strip(mtype)
                if inner and self._type(inner)[0] in (STRUCT, UNION):
                    hit = self._find(inner, name)
                    if hit is not None:
                        return off + hit[0], hit[1], hit[2]
        return None

    def _resolve(self, struct_name: str, field_path: str) -> tuple[int, int, int]:
        """(bit_offset, type_id, bitfield_size) of a dotted path through embedded members."""
        try:
            tid, total, mtype, bits = self._struct_id(struct_name), 0, 0, 0
        except BTFError:
            raise BTFError(f"struct {struct_name!r} not found in BTF "
                           f"(looking up field {field_path!r})") from None
        for part in field_path.split("."):
            if self._type(tid)[0] not in (STRUCT, UNION):
                raise BTFError(f"{struct_name}.{field_path}: {part!r} is not inside an "
                               "embedded struct/union (pointers are not followed)")
            hit = self._find(tid, part)
            if hit is None:
                raise BTFError(f"field {field_path!r} not found in struct {struct_name!r}")
            off, mtype, bits = hit
            total += off
            tid = self._strip(mtype)
        return total, mtype, bits

    def _size(self, tid: int) -> int:
        tid = self._strip(tid)
        if tid == 0:
            raise BTFError("void has no size")
        kind, _, _, _, size, pos = self._type(tid)
        if kind == PTR:
            return 8  # kernel BTF here is 64-bit
        if kind == ARRAY:
            elem, _, nelems = self._u32x3.unpack_from(self._data, pos + 12)
            return self._size(elem) * nelems
        if kind in (INT, STRUCT, UNION, ENUM, ENUM64, FLOAT, DATASEC):
            return size
        raise BTFError(f"type id {tid} (kind {kind}) has no size")

    # -- public API -----------------------------------------------------------
    def struct_size(self, struct_name: str) -> int:
        return self._type(self._struct_id(struct_name))[4]

    def has_field(self, struct_name: str, field_path: str) -> bool:
        try:
            self._resolve(struct_name, field_path)
        except BTFError:
            return False
        return True

    def offset(self, struct_name: str, field_path: str) -> int:
        bit_off, _, bits = self._resolve(struct_name, field_path)
        if bits or bit_off % 8:
            raise BTFError(f"{struct_name}.{field_path} is a bitfield; it has no byte offset")
        return bit_off // 8

    def member_size(self, struct_name: str, field_path: str) -> int:
        _, mtype, bits = self._resolve(struct_name, field_path)
        if bits:
            raise BTFError(f"{struct_name}.{field_path} is a bitfield; it has no byte size")
        return self._size(mtype)


def resolve_offsets(wanted: dict[str, tuple[str, str]], btf: BTF | None = None) -> dict[str, int]:
    """Map macro name -> byte offset; raise one BTFError naming every failure."""
    btf = btf or BTF.load()
    out, missing = {}, []
    for macro, (struct_name, field_path) in wanted.items():
        try:
            out[macro] = btf.offset(struct_name, field_path)
        except BTFError as e:
            missing.append(f"{macro} ({struct_name}.{field_path}): {e}")
    if missing:
        raise BTFError(f"{len(missing)} offset(s) unresolved: " + "; ".join(missing))
    return out


def cflags(offsets: dict[str, int]) -> list[str]:
    """Compiler -D flags for the offsets, sorted by macro name for stable builds."""
    return [f"-D{name}={offsets[name]}" for name in sorted(offsets)]


def release() -> None:
    """Forget the parsed BTF (about 12 MB): once the programs are compiled the agent needs no more of it."""
    _cache.clear()
