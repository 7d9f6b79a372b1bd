"""Secrets out (irreversibly), PII behind placeholders (reversibly).

Two operations, for two kinds of data:

- `Redactor.redact` replaces *secrets* (cloud keys, tokens, JWTs, credentials in URLs and headers,
  private keys, ``password=``-style values) with typed markers such as ``[REDACTED:aws_key]``. It runs
  once, early, before clustering, so secrets never reach the store, a prompt, a sink or our own logs.
  There is no way back, on purpose.
- `Redactor.mask` replaces *PII* that is not secret but should not go to a third-party model (emails,
  Luhn-valid card numbers, optionally IP addresses) with placeholders such as ``<email_1>`` recorded in
  a `PlaceholderTable`; `PlaceholderTable.restore` puts the originals back into the model's answer
  before it is shown to the engineer.

Speed: most log lines hold no secret, so each rule carries a few lowercase trigger substrings and its
regex only runs when one occurs in the line (``str.__contains__`` is far cheaper than a regex scan).
Stale triggers are harmless: replacements only remove text, so a trigger seen before a replacement is a
superset of what is left.

Idempotence: markers and placeholders are built so that no rule matches them again, and rules that
could see a marker as a value skip it; ``redact(redact(x)) == redact(x)``.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

MARKER_RE = re.compile(r"\[REDACTED:[a-z0-9_]+\]")
_PLACEHOLDER_RE = re.compile(r"<(email|card|ip)_([0-9]+)>")


def marker(kind: str) -> str:
    """The irreversible replacement for a secret of ``kind``."""
    return f"[REDACTED:{kind}]"


_Repl = Callable[[re.Match[str]], str]


@dataclass(frozen=True, slots=True)
class _Rule:
    """One secret kind: run ``pattern.sub(repl)`` only when the line passes the cheap check.

    ``triggers`` are lowercase substrings, one of which every match contains (lowercased); all rules'
    triggers together form the one-regex pre-check that most lines fail. A line that passes it is then
    tested per rule, by ``gate`` (a case-sensitive regex, for fixed token prefixes such as ``AKIA``)
    when the rule has one, else by its triggers.
    """

    kind: str
    triggers: tuple[str, ...]
    pattern: re.Pattern[str]
    repl: _Repl | str
    gate: re.Pattern[str] | None = None


def _whole(kind: str) -> str:
    return marker(kind)


def _keep_prefix(kind: str) -> _Repl:
    """Keep group ``pre`` (the key, scheme or separator) and replace the rest with the marker."""
    m = marker(kind)

    def repl(match: re.Match[str]) -> str:
        return match.group("pre") + m

    return repl


def _quoted_value(pre: str, val: str, kind: str, original: str) -> str:
    """``pre`` + the value replaced by a marker, keeping its quoting; markers are left alone."""
    for quote in ('\\"', '"', "'"):
        if len(val) >= 2 * len(quote) and val.startswith(quote) and val.endswith(quote):
            inner = val[len(quote) : -len(quote)]
            if MARKER_RE.fullmatch(inner) or not inner:
                return original
            return pre + quote + marker(kind) + quote
    if MARKER_RE.fullmatch(val):
        return original
    return pre + marker(kind)


def _kv_kind(key: str) -> str:
    k = key.lower()
    if "pass" in k or "pwd" in k:
        return "password"
    if "token" in k:
        return "token"
    if "private" in k:
        return "private_key"
    if "key" in k:
        return "api_key"
    if "credential" in k:
        return "credentials"
    return "secret"


def _kv_repl(match: re.Match[str]) -> str:
    return _quoted_value(match.group("pre"), match.group("val"), _kv_kind(match.group("key")), match.group(0))


def _auth_repl(match: re.Match[str]) -> str:
    scheme = (match.group("scheme") or "").strip().lower()
    kind = scheme if scheme in ("bearer", "basic") else "authorization"
    return match.group("pre") + (match.group("scheme") or "") + marker(kind)


def _looks_random(match: re.Match[str], kind: str) -> str:
    """``Bearer <token>`` / ``Basic <base64>`` outside an Authorization header: only when the word looks
    like a credential. Prose ("Basic authentication failed", "token_type=bearer ...") must survive, so the
    scheme must be capitalised (any case inside an Authorization header is handled by that rule) and the
    value needs a digit, ``=``, ``+``, or an uppercase letter after its first character.
    """
    val = match.group("val")
    if any(c.isdigit() or c in "=+" for c in val) or any(c.isupper() for c in val[1:]):
        return match.group("pre") + marker(kind)
    return match.group(0)


# Keys whose values are secrets in k=v / k: v / "k": "v" forms. The key must END with one of these words
# (so ``max_tokens=256`` and ``token_type=bearer`` stay, ``access_token=...`` and ``dbPassword=...`` go).
_KEY_WORDS = (
    r"passw(?:or)?d|pwd|secret|token|api[_-]?key|apikey|private[_-]?key|access[_-]?key|secret[_-]?key"
    r"|client[_-]?secret|auth[_-]?key|credentials?"
)
_KV_VALUE = (
    r"""(?:\\"(?:[^"\\\r\n]|\\[^"\r\n])*\\"|"(?:[^"\\\r\n]|\\.)*"|'[^'\r\n]*'|[^\s,;&"'<>{}\[\]\\]+)"""
)

_AUTH_SCHEMES = "bearer|basic|token|digest|negotiate|ntlm|apikey|aws4-hmac-sha256"
_PASS_TRIGGERS = ("pass", "pwd", "secret", "token", "key", "credential")

_RULES: tuple[_Rule, ...] = (
    _Rule(
        "private_key",
        ("private key",),
        re.compile(
            r"-----BEGIN (?P<label>(?:[A-Z0-9]+ )*PRIVATE KEY)-----.*?(?:-----END (?P=label)-----|\Z)", re.S
        ),
        _whole("private_key"),
    ),
    _Rule(
        "url_credentials",
        ("://",),
        re.compile(r"(?P<pre>\b[A-Za-z][A-Za-z0-9+.-]*://)(?!\[REDACTED:)[^\s:/@\[\]]*:[^\s/]*(?=@)"),
        _keep_prefix("url_credentials"),
    ),
    _Rule(
        "aws_key",
        ("akia", "asia", "agpa", "aida", "aroa", "aipa", "anpa", "anva", "apka", "abia", "acca"),
        re.compile(
            r"(?<![A-Za-z0-9])(?:AKIA|ASIA|AGPA|AIDA|AROA|AIPA|ANPA|ANVA|APKA|ABIA|ACCA)[A-Z0-9]{16}(?![A-Za-z0-9])"
        ),
        _whole("aws_key"),
        re.compile(r"A(?:KIA|SIA|GPA|IDA|ROA|IPA|NPA|NVA|PKA|BIA|CCA)"),
    ),
    _Rule(
        "gcp_api_key",
        ("aiza",),
        re.compile(r"AIza[0-9A-Za-z_-]{35}(?![0-9A-Za-z_-])"),
        _whole("gcp_api_key"),
        re.compile("AIza"),
    ),
    _Rule("gcp_token", ("ya29.",), re.compile(r"\bya29\.[0-9A-Za-z_-]{20,}"), _whole("gcp_token")),
    _Rule(
        "github_token",
        ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"),
        re.compile(
            r"(?<![A-Za-z0-9_])(?:gh[pousr]_[A-Za-z0-9]{20,255}|github_pat_[A-Za-z0-9_]{22,255})(?![A-Za-z0-9_])"
        ),
        _whole("github_token"),
        re.compile(r"gh[pousr]_|github_pat_"),
    ),
    _Rule(
        "slack_webhook",
        ("hooks.slack.com",),
        re.compile(r"https?://hooks\.slack\.com/(?:services|workflows|triggers)/[A-Za-z0-9_/-]+"),
        _whole("slack_webhook"),
    ),
    _Rule(
        "slack_token",
        ("xox", "xapp-"),
        re.compile(r"(?<![A-Za-z0-9])(?:xox[abposre]-[A-Za-z0-9-]{8,}|xapp-[0-9]+-[A-Za-z0-9-]{8,})"),
        _whole("slack_token"),
        re.compile(r"x(?:ox|app-)"),
    ),
    _Rule(
        "stripe_key",
        ("sk_live_", "sk_test_", "rk_live_", "rk_test_", "whsec_"),
        re.compile(r"(?<![A-Za-z0-9])(?:(?:sk|rk)_(?:live|test)_[0-9A-Za-z]{8,}|whsec_[0-9A-Za-z]{16,})"),
        _whole("stripe_key"),
        re.compile(r"[rs]k_(?:live|test)_|whsec_"),
    ),
    _Rule(
        "jwt",
        ("eyj",),
        re.compile(r"(?<![A-Za-z0-9_-])eyJ[A-Za-z0-9_-]{6,}\.[A-Za-z0-9_-]{6,}\.[A-Za-z0-9_-]*"),
        _whole("jwt"),
        re.compile("eyJ"),
    ),
    _Rule(
        "azure_key",
        ("key", "sig="),
        re.compile(
            r"(?P<pre>\b(?:AccountKey|SharedAccessKey|SharedAccessSignature|sig)=)(?!\[REDACTED:)[^;\s\"'&<>]+",
            re.I,
        ),
        _keep_prefix("azure_key"),
    ),
    _Rule(
        "authorization",
        ("authorization",),
        re.compile(
            r"(?P<pre>\b(?:proxy-)?authorization\\?[\"']?[ \t]*[:=][ \t]*\\?[\"']?)"
            rf"(?P<scheme>(?:{_AUTH_SCHEMES})[ \t]+)?"
            rf"(?!\[REDACTED:)(?!(?:{_AUTH_SCHEMES})[ \t])[^\s\"'\\,;}}\]]+",
            re.I,
        ),
        _auth_repl,
    ),
    _Rule(
        "bearer",
        ("bearer",),
        re.compile(r"(?P<pre>\b(?:Bearer|BEARER)[ \t]+)(?P<val>[A-Za-z0-9][A-Za-z0-9._~+/-]{7,}=*)"),
        lambda m: _looks_random(m, "bearer"),
    ),
    _Rule(
        "basic",
        ("basic",),
        re.compile(r"(?P<pre>\b(?:Basic|BASIC)[ \t]+)(?P<val>[A-Za-z0-9+/]{8,}={0,2})(?![A-Za-z0-9+/=])"),
        lambda m: _looks_random(m, "basic"),
    ),
    _Rule(
        "aws_secret",
        ("secret",),
        re.compile(
            r"(?P<pre>\b(?:aws_?secret_?(?:access_?)?key|secret_?access_?key)\\?[\"']?[ \t]*(?:=>|:=|=|:)[ \t]*\\?[\"']?)"
            r"[A-Za-z0-9/+=]{40}(?![A-Za-z0-9/+=])",
            re.I,
        ),
        _keep_prefix("aws_secret"),
    ),
    _Rule(
        "cli_flag",
        _PASS_TRIGGERS,
        re.compile(
            rf"(?P<pre>(?<![\w-])--?(?P<key>[\w-]*?(?:{_KEY_WORDS}))[ \t]+)(?P<val>(?!--[A-Za-z])(?!\[REDACTED:)[^\s\"']+)",
            re.I,
        ),
        lambda m: m.group("pre") + marker(_kv_kind(m.group("key"))),
    ),
    _Rule(
        "kv",
        _PASS_TRIGGERS,
        re.compile(
            rf"(?P<pre>(?P<key>\b[\w.-]*?(?:{_KEY_WORDS}))\b\\?[\"']?[ \t]*(?:=>|:=|=(?!=)|:(?!:))[ \t]*)(?P<val>{_KV_VALUE})",
            re.I,
        ),
        _kv_repl,
    ),
)


# Lowercase alternation without IGNORECASE: one search over the lowercased line, the cheapest test found
# (about 3x faster than ~40 substring tests, 20x faster than an IGNORECASE alternation).
def _trie_regex(words: Sequence[str]) -> str:
    """An alternation with common prefixes factored out (``a(?:kia|sia)``): sre then tests each first
    character once instead of once per word, which makes the pre-check ~2x faster."""
    trie: dict[str, Any] = {}
    for word in words:
        node = trie
        for ch in word:
            node = node.setdefault(ch, {})
        node[""] = {}

    def emit(node: dict[str, Any]) -> str:
        if "" in node:  # a trigger ends here: shorter match suffices, longer ones are redundant
            return ""
        branches = [re.escape(ch) + emit(child) for ch, child in sorted(node.items())]
        return branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"

    return emit(trie)


_PRECHECK = re.compile(_trie_regex(sorted({t for rule in _RULES for t in rule.triggers})))
# The same check with every digit (of the triggers and of the text) read as 0: it fails only when no
# line that differs from the text in digit values alone can pass the pre-check ("ya29." needs this).
_ZERO_DIGITS = str.maketrans("123456789", "000000000")
_PRECHECK_ANY_DIGITS = re.compile(
    _trie_regex(sorted({t.translate(_ZERO_DIGITS) for rule in _RULES for t in rule.triggers})))


# --- PII -------------------------------------------------------------------------------------------

_EMAIL_RE = re.compile(
    r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}(?![A-Za-z0-9-])"
)
# Card numbers: 13-19 digits, contiguous or grouped by single spaces/dashes, first digit 2-6 (card issuer
# ranges, so epoch-millisecond timestamps with a leading 1 are never taken for cards), Luhn-valid. The regex
# finds runs of digit groups; `_card` picks the windows inside a run that are cards.
_CARD_RE = re.compile(r"(?<![0-9])[0-9](?:[ -]?[0-9]){12,}(?![0-9])")
_CARD_PRECHECK = re.compile(r"[2-6][0-9]{3}[ -]?[0-9]{4}")
_IPV4_RE = re.compile(
    r"(?<![0-9.])(?:(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])\.){3}(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])(?!\.?[0-9])"
)
_IPV6_RE = re.compile(r"(?<![0-9A-Za-z:.])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![0-9A-Za-z:.])")


def luhn_ok(digits: str) -> bool:
    """The Luhn checksum used by payment card numbers."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


@dataclass(slots=True)
class PlaceholderTable:
    """Original <-> placeholder for one prompt/answer round trip (``<email_1>``, ``<card_2>``, ...).

    The same original always gets the same placeholder within a table, so the model can relate mentions.
    Placeholder-looking text already present in the input is reserved as itself, so ``restore`` never
    turns a literal ``<email_1>`` in a log into somebody's address.
    """

    _by_original: dict[tuple[str, str], str] = field(default_factory=dict)
    _by_placeholder: dict[str, str] = field(default_factory=dict)
    _counters: dict[str, int] = field(default_factory=dict)

    def placeholder(self, kind: str, original: str) -> str:
        """The placeholder for ``original`` (allocating the next free number on first sight)."""
        key = (kind, original)
        found = self._by_original.get(key)
        if found is not None:
            return found
        n = self._counters.get(kind, 0)
        while True:
            n += 1
            ph = f"<{kind}_{n}>"
            if ph not in self._by_placeholder:
                break
        self._counters[kind] = n
        self._by_original[key] = ph
        self._by_placeholder[ph] = original
        return ph

    def reserve_literals(self, text: str) -> None:
        """Record placeholder-shaped text already in ``text`` as mapping to itself."""
        if "<" not in text:
            return
        for m in _PLACEHOLDER_RE.finditer(text):
            self._by_placeholder.setdefault(m.group(0), m.group(0))

    def restore(self, text: str) -> str:
        """Put the originals back; unknown placeholders (invented by a model) are left as they are."""
        if "<" not in text or not self._by_placeholder:
            return text
        return _PLACEHOLDER_RE.sub(lambda m: self._by_placeholder.get(m.group(0), m.group(0)), text)

    def __len__(self) -> int:
        return len(self._by_original)

    def items(self) -> list[tuple[str, str]]:
        """(placeholder, original) pairs allocated so far (for an audit log)."""
        return [(ph, orig) for (_, orig), ph in self._by_original.items()]


class Redactor:
    """Configured once (which PII to mask, extra secret patterns), then called per text.

    ``extra_patterns`` are regexes for site-specific secrets; each whole match becomes
    ``[REDACTED:custom]``.
    """

    __slots__ = ("_extra", "ips", "pii")

    def __init__(self, *, pii: bool = True, ips: bool = False, extra_patterns: Sequence[str] = ()) -> None:
        self.pii = pii
        self.ips = ips
        self._extra = tuple(re.compile(p) for p in extra_patterns)

    def might_contain_secret(self, text: str) -> bool:
        """False when ``text`` certainly holds no secret (the cheap check ``redact`` starts with)."""
        return bool(self._extra) or _PRECHECK.search(text.lower()) is not None

    def might_contain_secret_any_digits(self, text: str) -> bool:
        """Like :meth:`might_contain_secret`, for ``text`` and every text that differs from it only in
        digit values: False means none of them holds a secret."""
        return bool(self._extra) or _PRECHECK_ANY_DIGITS.search(text.lower().translate(_ZERO_DIGITS)) is not None

    def redact(self, text: str) -> str:
        """Replace every secret in ``text`` by a typed marker; returns ``text`` itself when there is none."""
        low = text.lower()
        if _PRECHECK.search(low) is not None:
            for rule in _RULES:
                if rule.gate is not None:
                    if rule.gate.search(text) is None:
                        continue
                elif not any(t in low for t in rule.triggers):
                    continue
                text = rule.pattern.sub(rule.repl, text)
        for pattern in self._extra:
            text = pattern.sub(marker("custom"), text)
        return text

    def mask(self, text: str, table: PlaceholderTable) -> str:
        """Replace PII with reversible placeholders recorded in ``table`` (no-op when ``pii`` is off)."""
        if not self.pii:
            return text
        table.reserve_literals(text)
        if "@" in text:
            text = _EMAIL_RE.sub(lambda m: table.placeholder("email", m.group(0)), text)
        if _CARD_PRECHECK.search(text):
            text = _CARD_RE.sub(lambda m: _card(m, table), text)
        if self.ips:
            if ":" in text:
                text = _IPV6_RE.sub(lambda m: _ipv6(m, table), text)
            if "." in text:
                text = _IPV4_RE.sub(lambda m: table.placeholder("ip", m.group(0)), text)
        return text

    def scrub(self, text: str, table: PlaceholderTable) -> str:
        """Both steps, for text about to leave the process: ``mask(redact(text))``."""
        return self.mask(self.redact(text), table)


def _card(match: re.Match[str], table: PlaceholderTable) -> str:
    """Mask the Luhn-valid card numbers inside a run of digit groups.

    The run may hold more than a card (a date before it, an id after), so windows of consecutive
    digit groups are tried, longest first, from each group on.
    """
    raw = match.group(0)
    groups = [(m.start(), m.end()) for m in _DIGITS_RE.finditer(raw)]
    out: list[str] = []
    pos = 0
    i = 0
    while i < len(groups):
        ends: list[int] = []  # window ends j (exclusive) whose digits number 13..19, shortest first
        count = 0
        for j in range(i, len(groups)):
            count += groups[j][1] - groups[j][0]
            if count > 19:
                break
            if count >= 13:
                ends.append(j + 1)
        for j in reversed(ends):
            start, end = groups[i][0], groups[j - 1][1]
            window = groups[i:j]
            digits = "".join(raw[a:b] for a, b in window)
            if digits[0] in "23456" and _card_grouping(raw, window) and luhn_ok(digits):
                out.append(raw[pos:start])
                out.append(table.placeholder("card", raw[start:end]))
                pos = end
                i = j
                break
        else:
            i += 1
    if not out:
        return raw
    out.append(raw[pos:])
    return "".join(out)


_DIGITS_RE = re.compile(r"[0-9]+")


def _card_grouping(raw: str, window: list[tuple[int, int]]) -> bool:
    """Cards are printed contiguous, in fours (4-4-4-4, 4-4-4-4-3), or as 4-6-5 / 4-6-4 (Amex, Diners),
    with one separator throughout; other groupings (a date next to a number) are not cards."""
    if len(window) == 1:
        return True
    seps = {raw[window[k][1] : window[k + 1][0]] for k in range(len(window) - 1)}
    if len(seps) != 1:
        return False
    lengths = [b - a for a, b in window]
    if lengths in ([4, 6, 5], [4, 6, 4]):
        return True
    return all(n == 4 for n in lengths[:-1]) and 1 <= lengths[-1] <= 4


def _ipv6(match: re.Match[str], table: PlaceholderTable) -> str:
    raw = match.group(0)
    try:
        ipaddress.IPv6Address(raw)
    except ValueError:
        return raw
    return table.placeholder("ip", raw)
