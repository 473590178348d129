"""One precedence ladder: flag > NEWSLETTER_* environment > newsletter.toml > default;
secrets only from the environment."""

from conftest import invoke


def config_lines(*args):
    return {line.split()[0]: line for line in invoke(*args, "config").output.splitlines()}


def test_precedence(isolated, monkeypatch):
    monkeypatch.delenv("NEWSLETTER_SOURCES")
    (isolated / "newsletter.toml").write_text('brand = "Lab Radar"\nllm_timeout = 12\n'
                                              'sources = ["arxiv", "nature"]\n')
    lines = config_lines()
    assert "Lab Radar" in lines["brand"] and "(toml)" in lines["brand"]
    assert "arxiv,nature" in lines["sources"] and "(toml)" in lines["sources"]
    assert "(default)" in lines["outbox"] or "(NEWSLETTER_OUTBOX)" in lines["outbox"]
    monkeypatch.setenv("NEWSLETTER_BRAND", "Env Radar")
    assert "Env Radar" in config_lines()["brand"]
    assert "(NEWSLETTER_BRAND)" in config_lines()["brand"]
    flagged = config_lines("--brand", "Flag Radar")["brand"]
    assert "Flag Radar" in flagged and "(flag)" in flagged
    assert "12.0" in config_lines()["llm_timeout"]


def test_secrets_are_refused_in_the_toml_file(isolated):
    (isolated / "newsletter.toml").write_text('smtp_url = "smtps://me:pw@mail.example.org"\n')
    result = invoke("config", ok=False)
    assert result.exit_code == 2
    assert "smtp_url is a secret - set NEWSLETTER_SMTP_URL in the environment instead" in \
        result.output
    assert "pw@" not in result.output


def test_unknown_and_broken_toml(isolated):
    (isolated / "newsletter.toml").write_text('brnad = "typo"\n')
    result = invoke("config", ok=False)
    assert "unknown setting 'brnad' - see README > Configuration" in result.output
    (isolated / "newsletter.toml").write_text('brand = "unclosed\n')
    result = invoke("config", ok=False)
    assert result.exit_code == 2 and "is not valid TOML" in result.output


def test_secrets_are_masked(isolated, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_SECRET", "s3cr3t-value")
    monkeypatch.setenv("NEWSLETTER_IMAP_URL", "imaps://me:imap-pw@mail.example.org/INBOX")
    out = invoke("config").output
    assert "s3cr3t-value" not in out and "imap-pw" not in out
    assert "imaps://me:***@mail.example.org/INBOX" in out


def test_settings_dataclass_agrees_with_the_declarations():
    from dataclasses import fields

    from newsletter.config import SETTINGS, Settings

    declared = {s.name: s.default for s in SETTINGS}
    assert {f.name: f.default for f in fields(Settings)} == declared
