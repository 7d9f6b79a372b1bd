"""Redaction: secrets out for good, PII behind placeholders that come back in the answer."""

from __future__ import annotations

import string

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from triage.redact import PlaceholderTable, Redactor, luhn_ok

R = Redactor()
R_IPS = Redactor(ips=True)
SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

ALNUM = string.ascii_letters + string.digits


def s(alphabet: str, n: int, m: int | None = None) -> st.SearchStrategy[str]:
    return st.text(alphabet, min_size=n, max_size=m if m is not None else n)


def with_digit(strategy: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """Secret bodies carry a digit, so they can never be a substring of a marker like [REDACTED:jwt]."""
    return st.tuples(strategy, st.sampled_from(string.digits)).map(lambda t: t[0] + t[1])


B64URL = ALNUM + "-_"
# (kind, strategy of (planted text, the sensitive part that must not survive))
SECRETS: dict[str, st.SearchStrategy[tuple[str, str]]] = {
    "aws_key": st.builds(
        lambda p, b: (p + b, p + b),
        st.sampled_from(["AKIA", "ASIA"]),
        with_digit(s(string.ascii_uppercase + string.digits, 15)),
    ),
    "aws_secret": st.builds(
        lambda k, sep, v: (f"{k}{sep}{v}", v),
        st.sampled_from(["aws_secret_access_key", "AWS_SECRET_ACCESS_KEY", "SecretAccessKey"]),
        st.sampled_from(["=", ": ", " = ", '": "']),
        with_digit(s(ALNUM + "/+", 39)),
    ),
    "gcp_api_key": st.builds(lambda b: ("AIza" + b, "AIza" + b), with_digit(s(B64URL, 34))),
    "gcp_private_key": st.builds(
        lambda b: (
            '{"type": "service_account", "private_key": "-----BEGIN PRIVATE KEY-----\\n'
            + b
            + '\\n-----END PRIVATE KEY-----\\n"}',
            b,
        ),
        with_digit(s(ALNUM + "+/", 20, 60)),
    ),
    "azure": st.builds(
        lambda k, v: (
            f"DefaultEndpointsProtocol=https;AccountName=acct;{k}={v};EndpointSuffix=core.windows.net",
            v,
        ),
        st.sampled_from(["AccountKey", "SharedAccessKey"]),
        with_digit(s(ALNUM + "+/", 20, 60)).map(lambda v: v + "=="),
    ),
    "github": st.builds(
        lambda p, b: (p + b, p + b),
        st.sampled_from(["ghp_", "gho_", "ghu_", "ghs_", "ghr_"]),
        with_digit(s(ALNUM, 35)),
    ),
    "github_pat": st.builds(
        lambda b: ("github_pat_" + b, "github_pat_" + b), with_digit(s(ALNUM + "_", 40, 82))
    ),
    "slack_token": st.builds(
        lambda p, b: (p + b, p + b),
        st.sampled_from(["xoxb-", "xoxp-", "xoxa-", "xapp-1-"]),
        with_digit(s(ALNUM + "-", 10, 40)),
    ),
    "slack_webhook": st.builds(
        lambda a, b: (f"https://hooks.slack.com/services/T{a}/B{a}/{b}", b),
        with_digit(s(ALNUM, 8)),
        with_digit(s(ALNUM, 24)),
    ),
    "stripe": st.builds(
        lambda p, b: (p + b, p + b),
        st.sampled_from(["sk_live_", "rk_live_", "sk_test_"]),
        with_digit(s(ALNUM, 24)),
    ),
    "jwt": st.builds(
        lambda a, b, c: (f"eyJ{a}.{b}.{c}", f"{a}.{b}.{c}"),
        with_digit(s(B64URL, 10, 40)),
        s(B64URL, 10, 40),
        s(B64URL, 10, 40),
    ),
    "bearer": st.builds(
        lambda h, v: (f"{h}Bearer {v}", v),
        st.sampled_from(["Authorization: ", "authorization=", '"Authorization": "', ""]),
        st.tuples(st.sampled_from(ALNUM), with_digit(s(ALNUM + "-._~+/", 12, 60))).map("".join),
    ),
    "basic": st.builds(
        lambda h, v: (f"{h}Basic {v}", v),
        st.sampled_from(["Authorization: ", '"authorization": "', "Proxy-Authorization: ", ""]),
        with_digit(s(ALNUM + "+/", 12, 40)).map(lambda v: v + "="),
    ),
    "url_credentials": st.builds(
        lambda sc, u, p: (f"{sc}://{u}:{p}@db.internal:5432/app", p),
        st.sampled_from(["postgres", "https", "redis", "amqp", "mongodb+srv"]),
        s(string.ascii_lowercase, 1, 10),
        with_digit(s(ALNUM + "!$%*@", 4, 20)),
    ),
    "pem": st.builds(
        lambda label, b: (
            f"-----BEGIN {label}PRIVATE KEY-----\n{b}\n{b}\n-----END {label}PRIVATE KEY-----",
            b,
        ),
        st.sampled_from(["", "RSA ", "EC ", "OPENSSH ", "ENCRYPTED "]),
        with_digit(s(ALNUM + "+/", 16, 64)),
    ),
    "kv": st.builds(
        lambda k, form, v: (form.format(k=k, v=v), v),
        st.sampled_from(
            [
                "password",
                "passwd",
                "pwd",
                "secret",
                "token",
                "api_key",
                "apikey",
                "client_secret",
                "DB_PASSWORD",
                "accessToken",
                "X-Api-Key",
            ]
        ),
        st.sampled_from(
            [
                "{k}={v}",
                "{k}: {v}",
                '"{k}": "{v}"',
                "'{k}': '{v}'",
                '{k}="{v}"',
                "{k} = {v}",
                '\\"{k}\\": \\"{v}\\"',
                "--{k} {v}",
                "--{k}={v}",
            ]
        ),
        with_digit(s(ALNUM + "!#$%()*+-./:?@^_~", 4, 24)),
    ),
}

# Ordinary log text: letters, digits, spaces and punctuation, but none of the characters secrets are
# glued with, so a planted secret stays a separate token.
SURROUND = st.text(string.ascii_letters + string.digits + " .,()!?-#", max_size=60)
ORDINARY_WORDS = [
    "GET", "/api/v1/orders", "status=500", "latency=12ms", "user=alice", "bob@example.com", "failed",
    "connection", "refused", "10.0.0.1:5432", "2024-01-15T10:00:00Z", "max_tokens=256", "token_type=bearer",
    "Bearer token expired", "Basic authentication failed", "https://example.com:8443/x", "cache_key=user:42",
    "retrying", "in", "3s", "OutOfMemoryError", "java.lang.NullPointerException", "at", "Foo.bar(Foo.java:42)",
    "keyspace", "passed", "tokens", "secrets_manager", "sig", "a=b;c=d", "{", "}", '"msg":', '"ok"',
    "pid=123", "4111", "password", "expired", "for", "the", "api", "id=1700000000000",
]  # fmt: skip


class TestSecrets:
    @pytest.mark.parametrize("kind", sorted(SECRETS))
    @SETTINGS
    @given(data=st.data())
    def test_planted_secret_never_survives(self, kind: str, data: st.DataObject) -> None:
        """A secret of each kind planted in random text is gone after redaction, and a marker is there."""
        planted, sensitive = data.draw(SECRETS[kind])
        before, after = data.draw(SURROUND), data.draw(SURROUND)
        assume(sensitive not in before and sensitive not in after)
        out = R.redact(f"{before} {planted} {after}")
        assert sensitive not in out
        assert "[REDACTED:" in out

    @SETTINGS
    @given(data=st.data())
    def test_several_secrets_in_one_multiline_event(self, data: st.DataObject) -> None:
        """Many secrets in one multi-line event are all removed."""
        kinds = data.draw(st.lists(st.sampled_from(sorted(SECRETS)), min_size=2, max_size=5))
        parts = [data.draw(SECRETS[k]) for k in kinds]
        text = "\n".join(f"line {i}: {p}" for i, (p, _) in enumerate(parts))
        out = R.redact(text)
        for _, sensitive in parts:
            assert sensitive not in out

    @SETTINGS
    @given(data=st.data())
    def test_idempotent(self, data: st.DataObject) -> None:
        """Redacting twice gives the same text as redacting once."""
        kinds = data.draw(st.lists(st.sampled_from(sorted(SECRETS)), max_size=3))
        pieces = (
            [data.draw(SURROUND)]
            + [data.draw(SECRETS[k])[0] for k in kinds]
            + [data.draw(st.text(max_size=40))]
        )
        once = R.redact(" ".join(pieces))
        assert R.redact(once) == once

    @SETTINGS
    @given(st.lists(st.sampled_from(ORDINARY_WORDS), max_size=25))
    def test_text_without_secrets_is_unchanged(self, words: list[str]) -> None:
        """Ordinary log lines (including near-miss words like max_tokens=, Bearer token, Basic auth) pass unchanged."""
        line = " ".join(words)
        assert R.redact(line) == line

    @pytest.mark.parametrize(
        ("line", "expected"),
        [
            ("Authorization: Bearer abc.def-123456", "Authorization: Bearer [REDACTED:bearer]"),
            ('{"password": "hunter2", "user": "bob"}', '{"password": "[REDACTED:password]", "user": "bob"}'),
            ("postgres://admin:s3cr@t@db:5432/app", "postgres://[REDACTED:url_credentials]@db:5432/app"),
            ("key AKIAIOSFODNN7EXAMPLE used", "key [REDACTED:aws_key] used"),
            (
                "-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY----- done",
                "[REDACTED:private_key] done",
            ),
            ("max_tokens=256 token_type=bearer", "max_tokens=256 token_type=bearer"),
        ],
    )
    def test_markers_keep_the_key_and_name_the_kind(self, line: str, expected: str) -> None:
        """Markers are typed, keys and schemes are kept, and near-misses are left alone."""
        assert R.redact(line) == expected

    def test_truncated_pem_is_redacted_to_the_end(self) -> None:
        """A private key block cut before its END line is removed to the end of the text."""
        out = R.redact("boot\n-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC")
        assert out == "boot\n[REDACTED:private_key]"

    def test_extra_patterns(self) -> None:
        """Site-specific patterns given at construction are redacted as custom."""
        r = Redactor(extra_patterns=[r"ACME-[0-9]{6}"])
        assert r.redact("licence ACME-123456 ok") == "licence [REDACTED:custom] ok"


EMAILS = st.builds(
    lambda u, d, t: f"{u}@{d}.{t}", s(string.ascii_lowercase + string.digits + "._+-", 1, 12).filter(lambda u: u[0].isalnum()),
    s(string.ascii_lowercase, 1, 10), st.sampled_from(["com", "io", "org", "co.uk"]),
)  # fmt: skip


def luhn_complete(prefix: str) -> str:
    """Append the check digit that makes ``prefix`` Luhn-valid."""
    for d in "0123456789":
        if luhn_ok(prefix + d):
            return prefix + d
    raise AssertionError("unreachable")


CARDS = st.builds(
    lambda first, body, sep: _group(luhn_complete(first + body), sep),
    st.sampled_from(["4", "5", "3", "6"]),
    s(string.digits, 14),
    st.sampled_from(["", " ", "-"]),
)


def _group(num: str, sep: str) -> str:
    return sep.join(num[i : i + 4] for i in range(0, len(num), 4)) if sep else num


class TestPii:
    @SETTINGS
    @given(before=SURROUND, email=EMAILS, card=CARDS, after=SURROUND)
    def test_emails_and_cards_are_masked_and_restored(
        self, before: str, email: str, card: str, after: str
    ) -> None:
        """Emails and Luhn-valid cards become placeholders; restore gives the exact original back."""
        text = f"{before} {email} paid with {card} {after}"
        table = PlaceholderTable()
        masked = R.mask(text, table)
        assert email not in masked
        assert card not in masked
        assert "<email_" in masked and "<card_" in masked
        assert table.restore(masked) == text

    @SETTINGS
    @given(st.text(max_size=200))
    def test_restore_inverts_mask_on_any_text(self, text: str) -> None:
        """restore(mask(x)) == x for arbitrary text, with IP masking on."""
        table = PlaceholderTable()
        assert table.restore(R_IPS.mask(text, table)) == text

    @SETTINGS
    @given(
        st.lists(
            st.one_of(EMAILS, CARDS, st.sampled_from(["<email_1>", "<card_2>", "10.1.2.3", "fe80::1", "x"])),
            max_size=8,
        )
    )
    def test_restore_inverts_mask_with_literal_placeholders(self, parts: list[str]) -> None:
        """Placeholder-looking text already in the input survives the round trip unchanged."""
        text = " ".join(parts)
        table = PlaceholderTable()
        assert table.restore(R_IPS.mask(text, table)) == text

    def test_luhn_invalid_and_timestamps_are_not_cards(self) -> None:
        """Luhn-invalid numbers and epoch-millisecond timestamps stay as they are."""
        text = "order 4111111111111112 at ts=1700000000000 id 1234567890123456"
        assert R.mask(text, PlaceholderTable()) == text

    def test_card_after_a_date_in_one_digit_run(self) -> None:
        """A card right after other digit groups is still found."""
        table = PlaceholderTable()
        assert R.mask("on 2024-01-15 4242 4242 4242 4242 ok", table) == "on 2024-01-15 <card_1> ok"

    def test_same_value_same_placeholder(self) -> None:
        """One value maps to one placeholder within a table, so the model can relate mentions."""
        table = PlaceholderTable()
        out = R.mask("a@x.io then b@x.io then a@x.io", table)
        assert out == "<email_1> then <email_2> then <email_1>"
        assert table.items() == [("<email_1>", "a@x.io"), ("<email_2>", "b@x.io")]

    def test_ips_only_when_enabled(self) -> None:
        """IPv4 and IPv6 addresses are masked only with ips=True; times and versions are not IPv6."""
        text = "from 10.0.0.1 and 2001:db8::7 at 12:30:45"
        assert R.mask(text, PlaceholderTable()) == text
        assert R_IPS.mask(text, PlaceholderTable()) == "from <ip_2> and <ip_1> at 12:30:45"

    def test_unknown_placeholders_from_the_model_are_left(self) -> None:
        """A placeholder the model invented (not in the table) is left as written."""
        table = PlaceholderTable()
        R.mask("mail a@x.io", table)
        assert table.restore("ask <email_1> and <email_9>") == "ask a@x.io and <email_9>"

    def test_pii_off(self) -> None:
        """With pii=False mask changes nothing; scrub still removes secrets."""
        r = Redactor(pii=False)
        table = PlaceholderTable()
        assert r.mask("a@x.io", table) == "a@x.io"
        assert r.scrub("a@x.io password=hunter2", table) == "a@x.io password=[REDACTED:password]"
