"""Redaction: secrets in command lines are replaced by `***` before an event reaches any exporter.

Applied once, in Pipeline.emit, to `process.args` and `parent.args`. A process whose args were changed
gets the flag `redacted`. Built-in rules:

- `name=value` and `name: value` where the name ends in a secret word (password, passwd, pass, pwd,
  secret, token, api_key/apikey, access_key, private_key, client_secret, credential(s), auth), as
  flags (`--db-password=x`), environment assignments (`AWS_SECRET_ACCESS_KEY=x`) or JSON/YAML-ish text
  (`{"password": "x"}`); the name must start at a word boundary, so `compass=3` is left alone;
- such a flag followed by its value in the next argument (`--password x`, `--token x`);
- `Authorization: <scheme> x` and `Bearer x`;
- well-known token shapes: GitHub (`ghp_` ...), Slack (`xoxb-` ...), GitLab, AWS access key ids,
  `sk-` API keys, JWTs;
- the password of a URL (`scheme://user:***@host`);
- tool options that only mean a password for that tool: `mysql -pX` (attached; a bare `-p` prompts),
  `sshpass -p X`, `redis-cli -a X`, `curl -u user:X`.

Extra rules come from the config (`redact.rules: [{name, pattern}]`): a regex whose group `secret`
(or, without it, the whole match) is replaced.

Cost: one regex search over the joined args decides whether any rule can apply; arguments without a
candidate word cost about a microsecond per event (docs/benchmarks.md, "Redaction").
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import msgspec
from pydantic import BaseModel, ConfigDict, Field, field_validator

from siemhub.collector.core.event import Event, Process

MASK = "***"

_WORD = (r"(?:password|passwd|passphrase|pass|pwd|secret|token|api[_-]?key|access[_-]?key|secret[_-]?key"
         r"|private[_-]?key|client[_-]?secret|credentials?|auth)")
_NAME = rf"(?:[A-Za-z0-9]+[_.-])*{_WORD}"

# name=value / name: value, anywhere in an argument (sh -c strings, JSON bodies).
_ASSIGN = re.compile(rf"""(?i)(?<![A-Za-z0-9])(-{{0,2}}{_NAME}["']?\s*[=:]\s*["']?)(?!\*\*\*)([^\s"'&;,]+)""")
# a flag whose value is the next argument
_FLAG = re.compile(rf"(?i)-{{1,2}}{_NAME}")
_AUTH = re.compile(r"""(?i)(authorization\s*[:=]\s*(?:(?:bearer|basic|token|digest|negotiate)\s+)?)(?!\*\*\*)([^\s"']+)""")
_BEARER = re.compile(r"(?i)(\bbearer\s+)([A-Za-z0-9._~+/=-]{8,})")
_TOKENS = re.compile(
    r"\b(?:gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}|xox[abposr]-[A-Za-z0-9-]{10,}"
    r"|glpat-[A-Za-z0-9_-]{20,}|AKIA[0-9A-Z]{16}|sk-[A-Za-z0-9_-]{20,}"
    r"|eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,})")
_URL = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^/\s:@]*:)(?!\*\*\*@)([^/\s@]+)(@)")

# The cheap test: could any built-in rule apply to this text? Run on the lower-cased text: a
# case-insensitive alternation costs about 7x more in CPython's re (2.1 vs 0.3 µs here).
_PRECHECK = re.compile(
    r"pass|pwd|secret|token|key|auth|bearer|credential|gh[pousr]_|github_pat|xox|glpat|akia|sk-|eyj|://[^/\s]*@")

# Tools whose short options mean "password" only for them: basename -> (option, attached allowed, separate)
_TOOLS: dict[str, tuple[str, bool, bool]] = {
    "mysql": ("-p", True, False), "mysqldump": ("-p", True, False), "mysqladmin": ("-p", True, False),
    "mariadb": ("-p", True, False), "mariadb-dump": ("-p", True, False), "mysqlimport": ("-p", True, False),
    "sshpass": ("-p", True, True),
    "redis-cli": ("-a", True, True),
}
_USERPASS_TOOLS = {"curl": frozenset(("-u", "--user")), "wget": frozenset(), "http": frozenset(("-a", "--auth"))}


def _keep1(m: re.Match) -> str:
    return m.group(1) + MASK


def _keep1_3(m: re.Match) -> str:
    return m.group(1) + MASK + m.group(3)


class RedactRule(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    pattern: str = Field(description="regex; its group `secret`, or the whole match, is replaced")

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, v: str) -> str:
        try:
            re.compile(v)
        except re.error as exc:
            raise ValueError(f"not a valid regex: {exc}") from None
        return v


class RedactConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    enabled: bool = True
    rules: list[RedactRule] = []


def _mask_group(name: str):
    def repl(m: re.Match) -> str:
        s, e = m.span(name)
        if s < 0:
            return m.group(0)
        return m.group(0)[: s - m.start()] + MASK + m.group(0)[e - m.start():]
    return repl


_UNSEEN = object()
_VERDICT_ARGS_MAX = 64
_VERDICT_CHARS_MAX = 4 << 20


def _basename(p: Process) -> str:
    path = p.binary or (p.args[0] if p.args else "")
    return path.rsplit("/", 1)[-1]


class Redactor:
    def __init__(self, rules: Sequence[RedactRule] = ()) -> None:
        self._custom = []
        for r in rules:
            rx = re.compile(r.pattern)
            repl = _mask_group("secret") if "secret" in rx.groupindex else (lambda m: MASK)
            self._custom.append((rx, repl))
        self.redacted = 0  # events changed
        # id(process) -> (process, its redacted form). Process objects are shared and immutable: one
        # image is the `process` of its exec and exit and the `parent` of its children, so each is
        # checked once. The original is kept referenced so that its id cannot be reused meanwhile.
        self._seen: dict[int, tuple[Process, Process]] = {}
        # (tool, *args) -> the redacted arguments, or None when nothing changes. A redacted list is
        # shared by the images that have it: processes are immutable once built.
        self._verdicts: dict[tuple[str, ...], list[str] | None] = {}
        self._verdict_chars = 0  # characters held by the keys: the memo stays within a few MB

    @classmethod
    def from_config(cls, cfg: RedactConfig | None) -> Redactor | None:
        if cfg is None or not cfg.enabled:
            return None
        return cls(cfg.rules)

    def apply(self, events: Sequence[Event]) -> int:
        """Redact in place (each event's process/parent is replaced by a redacted copy, never
        mutated: the process cache shares them). Returns the number of events changed."""
        changed = 0
        seen = self._seen.get  # the lookup of process() inlined: this runs for every event
        for e in events:
            hit = False
            p = e.process
            if p is not None and p.args:
                h = seen(id(p))
                q = h[1] if h is not None and h[0] is p else self._first(p)
                if q is not p:
                    e.process, hit = q, True
            p = e.parent
            if p is not None and p.args:
                h = seen(id(p))
                q = h[1] if h is not None and h[0] is p else self._first(p)
                if q is not p:
                    e.parent, hit = q, True
            changed += hit
        self.redacted += changed
        return changed

    def process(self, p: Process) -> Process:
        hit = self._seen.get(id(p))
        if hit is not None and hit[0] is p:
            return hit[1]
        return self._first(p)

    def _first(self, p: Process) -> Process:
        """An image not seen before: check it, remember the verdict."""
        q = self._process(p)
        if len(self._seen) >= 8192:
            for key in list(self._seen)[:4096]:  # oldest half: recent images are the ones seen again
                del self._seen[key]
        self._seen[id(p)] = (p, q)
        return q

    def _process(self, p: Process) -> Process:
        # Hosts run the same command lines over and over (shells, cron, probes, build steps): the verdict
        # for an argument list is computed once (the checks cost ~0.9 us, the look-up ~0.2).
        tool = _basename(p)
        if len(p.args) > _VERDICT_ARGS_MAX:  # long lists: not kept (4,096 of them could hold gigabytes)
            args = self.args(p.args, tool)
        else:
            key = (tool, *p.args)
            verdicts = self._verdicts
            args = verdicts.get(key, _UNSEEN)
            if args is _UNSEEN:
                args = self.args(p.args, tool)
                if len(verdicts) >= 4096 or self._verdict_chars > _VERDICT_CHARS_MAX:
                    verdicts.clear()
                    self._verdict_chars = 0
                verdicts[key] = args
                self._verdict_chars += sum(map(len, key))
        if args is None:
            return p
        flags = p.flags if "redacted" in p.flags else [*p.flags, "redacted"]
        return msgspec.structs.replace(p, args=args, flags=flags)

    def args(self, args: list[str], tool: str = "", *, guards: bool = True) -> list[str] | None:
        """A redacted copy of args, or None when nothing had to change. `guards=False` runs every rule
        everywhere (the definition the cheap guards must match: tests/unit/test_redact.py)."""
        joined = "\n".join(args)
        tool_rule = _TOOLS.get(tool)
        userpass = _USERPASS_TOOLS.get(tool)
        custom = [c for c in self._custom if c[0].search(joined)] if self._custom else ()
        if not custom and not _PRECHECK.search(joined.lower()):
            # No built-in word, token shape or URL password anywhere, so only a tool's own password
            # option can apply (every _FLAG name holds a _PRECHECK word): look for that option first.
            if not guards:
                if tool_rule is None and userpass is None:
                    return None
            elif tool_rule is not None:
                opt = tool_rule[0]
                if not any(a.startswith(opt) for a in args[1:]):
                    return None
            elif not userpass or userpass.isdisjoint(args):
                return None
        out = list(args)
        mask_next = False
        for i, a in enumerate(out):
            if mask_next:
                mask_next = False
                if a != MASK:
                    out[i] = MASK
                continue
            b = a
            if len(b) > 1 and b[0] == "-" and _FLAG.fullmatch(b) and i + 1 < len(out):
                mask_next = True
            elif tool_rule is not None and b.startswith(tool_rule[0]) and i > 0:
                opt, attached, separate = tool_rule
                if len(b) > len(opt) and attached and b[len(opt):] != MASK:
                    b = opt + MASK
                elif b == opt and separate and i + 1 < len(out):
                    mask_next = True
            elif userpass and b in userpass and i + 1 < len(out) and ":" in out[i + 1]:
                user, _, secret = out[i + 1].partition(":")
                if secret and secret != MASK:
                    out[i + 1] = f"{user}:{MASK}"
            low = b.lower()
            if _PRECHECK.search(low):
                # Each rule runs only where the text it needs is present (a substring test costs ~20 ns,
                # a substitution ~1 µs). Substitutions only cut text and insert MASK, so a test on the
                # original text stays a necessary condition after the earlier rules ran.
                if not guards or "=" in b or ":" in b:
                    b = _ASSIGN.sub(_keep1, b)
                if not guards or "authorization" in low:
                    b = _AUTH.sub(_keep1, b)
                if not guards or "bearer" in low:
                    b = _BEARER.sub(_keep1, b)
                if not guards or ("gh" in low or "xox" in low or "glpat" in low or "akia" in low or "sk-" in low
                                  or "eyj" in low):
                    b = _TOKENS.sub(MASK, b)
                if not guards or ("@" in b and "://" in b):
                    b = _URL.sub(_keep1_3, b)
            for rx, repl in custom:
                b = rx.sub(repl, b)
            out[i] = b
        return out if out != args else None
