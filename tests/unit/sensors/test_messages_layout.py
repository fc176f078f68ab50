"""The Python mirrors in collector/sensors/messages.py against the C structs in bpf/include/siemhub.h:
gcc compiles the header and prints every sizeof and offsetof, which must equal SIZES and FIELDS."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from siemhub.collector.sensors import messages as m

REPO = Path(__file__).resolve().parents[3]
INCLUDE = REPO / "bpf" / "include"


def _c_layout(tmp_path: Path) -> dict[str, int]:
    gcc = shutil.which("gcc")
    if gcc is None:
        from tests.conftest import server_unavailable

        server_unavailable("gcc not found: cannot check the message layout against bpf/include/siemhub.h")
    lines = []
    for struct, size in m.SIZES.items():
        lines.append(f'printf("{struct} %zu\\n", sizeof(struct {struct}));')
        for field in m.FIELDS[struct]:
            lines.append(f'printf("{struct}.{field} %zu\\n", offsetof(struct {struct}, {field}));')
    src = tmp_path / "layout.c"
    src.write_text("#include <stddef.h>\n#include <stdio.h>\n#include \"siemhub.h\"\n"
                   "int main(void) {\n" + "\n".join(lines) + "\nreturn 0;\n}\n")
    exe = tmp_path / "layout"
    cc = subprocess.run([gcc, "-Wall", "-Werror", f"-I{INCLUDE}", "-o", str(exe), str(src)],
                        capture_output=True, text=True, timeout=60)
    assert cc.returncode == 0, f"gcc failed on siemhub.h:\n{cc.stderr}"
    out = subprocess.run([str(exe)], capture_output=True, text=True, check=True, timeout=10).stdout
    return {k: int(v) for k, v in (line.split() for line in out.splitlines())}


def test_python_mirrors_match_the_c_header(tmp_path):
    c = _c_layout(tmp_path)
    mismatches = []
    for struct, size in m.SIZES.items():
        if c[struct] != size:
            mismatches.append(f"sizeof(struct {struct}): C {c[struct]}, Python {size}")
        for field, off in m.FIELDS[struct].items():
            if c[f"{struct}.{field}"] != off:
                mismatches.append(f"offsetof({struct}, {field}): C {c[f'{struct}.{field}']}, Python {off}")
    assert not mismatches, "messages.py is out of step with bpf/include/siemhub.h:\n" + "\n".join(mismatches)


def test_field_tables_agree_with_the_struct_formats():
    """The struct formats (what decode() unpacks) must read each field at the offset FIELDS declares (what
    gcc checked): pack distinct values, find each one at its declared offset. Fields are listed in struct
    order after the header."""
    widths = {"B": 1, "H": 2, "I": 4, "Q": 8}
    for name, s in (("sh_msg_exec", m.EXEC), ("sh_msg_fork", m.FORK), ("sh_msg_exit", m.EXIT)):
        codes = s.format.lstrip("<")
        # expand the format into one code per value ("10I" -> I x10), skipping pad bytes
        items, num = [], ""
        for ch in codes:
            if ch.isdigit():
                num += ch
                continue
            n = int(num or 1)
            num = ""
            if ch == "x":
                continue
            items += [ch] * (1 if ch == "s" else n)
        values = [bytes(range(1, 17)) if c == "s" else (i + 1) * 0x01010101 % (1 << (8 * widths[c]))
                  for i, c in enumerate(items)]
        raw = s.pack(*values)
        assert len(raw) == m.SIZES[name]
        for field, off in m.FIELDS[name].items():
            idx = list(m.FIELDS[name]).index(field)
            hdr = len(m.HDR_FIELDS)
            code = items[hdr + idx]
            if code == "s":
                assert raw[off : off + 16] == values[hdr + idx]
            else:
                got = int.from_bytes(raw[off : off + widths[code]], "little")
                assert got == values[hdr + idx], f"{name}.{field}: offset {off} does not hold that field"
    for field, off in m.HDR_FIELDS.items():
        raw = m.HDR.pack(0x11, 0x22334455, 0x0102030405060708)
        want = {"type": 0x11, "size": 0x22334455, "ktime": 0x0102030405060708}[field]
        width = {"type": 1, "size": 4, "ktime": 8}[field]
        assert int.from_bytes(raw[off : off + width], "little") == want


def test_message_type_numbers_and_flags_match_the_header():
    text = (INCLUDE / "siemhub.h").read_text()

    def define(name):
        mm = re.search(rf"\b{name}\s*=\s*(\d+)", text) or re.search(rf"#define\s+{name}\s+\(1U << (\d+)\)", text)
        assert mm, name
        return int(mm.group(1))

    assert (m.MSG_EXEC, m.MSG_FORK, m.MSG_EXIT) == (define("SH_MSG_EXEC"), define("SH_MSG_FORK"),
                                                    define("SH_MSG_EXIT"))
    assert m.EXEC_TRUNC_FILENAME == 1 << define("SH_EXEC_TRUNC_FILENAME")
    assert m.EXEC_TRUNC_ARGS == 1 << define("SH_EXEC_TRUNC_ARGS")
    assert m.EXEC_TRUNC_CWD == 1 << define("SH_EXEC_TRUNC_CWD")
    assert m.EXEC_ARGS_FAULT == 1 << define("SH_EXEC_ARGS_FAULT")
