"""subscribers import / export: spreadsheet CSV, JSON, idempotence and the round trip."""

import json
from dataclasses import asdict
from pathlib import Path

import pytest
from conftest import ROOT, invoke

from newsletter import store
from newsletter.lists import roster

HEADER = "email,name,language,timezone,topics"

# the file format as "subscribers import --help" documents it (written here, not read
# from listio.COLUMNS)
COLUMNS = ("email", "name", "language", "timezone", "send_hour", "frequency", "weekday",
           "max_papers", "status", "confirmed_at", "authors", "topics", "categories",
           "exclude", "likes", "ranking", "like_cap", "feedback")


def db(isolated, name="newsletter.db"):
    return store.open_db(isolated / name)


def write(tmp: Path, name: str, text: str, encoding: str = "utf-8", newline: str = "\n"
          ) -> str:
    path = tmp / name
    path.write_bytes(text.replace("\n", newline).encode(encoding))
    return str(path)


def everyone(database):
    return [asdict(s) for s in store.list_subscribers(database)]


# --- the sample file ------------------------------------------------------------------------


def test_example_csv_imports_and_a_second_run_changes_nothing(isolated):
    example = str(ROOT / "subscribers" / "example.csv")
    out = invoke("subscribers", "import", example).output
    assert out == ("row 2: added ada@example.org\n"
                   "row 3: added li.wei@example.cn\n"
                   "row 4: added zhang.min@example.edu.cn\n"
                   "row 5: added grace@example.edu\n"
                   "4 added, 0 updated, 0 unchanged, 0 rejected\n")
    before = everyone(db(isolated))
    out = invoke("subscribers", "import", example).output
    assert out == ("row 2: unchanged ada@example.org\n"
                   "row 3: unchanged li.wei@example.cn\n"
                   "row 4: unchanged zhang.min@example.edu.cn\n"
                   "row 5: unchanged grace@example.edu\n"
                   "0 added, 0 updated, 4 unchanged, 0 rejected\n")
    assert everyone(db(isolated)) == before
    zhang = store.get_subscriber(db(isolated), "zhang.min@example.edu.cn")
    assert (zhang.name, zhang.frequency, zhang.weekday) == ("张敏", "weekly", "fri")
    assert zhang.authors == ("Yang Liu; with: Maosong Sun, Yong Cheng",)
    assert zhang.topics == ('"protein structure" OR AlphaFold',)
    ada = store.get_subscriber(db(isolated), "ada@example.org")
    assert ada.topics == ("diffusion models", '"world models" AND planning')
    assert store.get_subscriber(db(isolated), "grace@example.edu").name == "Hopper, Grace"


def test_example_json_matches_the_csv(isolated, tmp_path):
    invoke("subscribers", "import", str(ROOT / "subscribers" / "example.csv"))
    out = invoke("subscribers", "import", str(ROOT / "subscribers" / "example.json")).output
    assert out == ("row 1: unchanged ada@example.org\n"
                   "row 2: unchanged li.wei@example.cn\n"
                   "row 3: unchanged zhang.min@example.edu.cn\n"
                   "0 added, 0 updated, 3 unchanged, 0 rejected\n")


def test_history_shows_the_import(isolated):
    invoke("subscribers", "import", str(ROOT / "subscribers" / "example.csv"))
    history = store.subscriber_history(db(isolated), "ada@example.org")
    assert [(e["event"], e["origin"], e["detail"]) for e in history] == \
        [("imported", "import", "active")]


# --- spreadsheets ----------------------------------------------------------------------------


def test_excel_csv_bom_semicolons_crlf_quoted_commas_and_chinese(isolated, tmp_path):
    text = ("\ufeffemail;name;topics;authors;language\n"
            'wang@example.cn;王芳;"graph, neural|""large language model*"" AND '
            'reasoning";"Taiming Lu|Yang Liu; initials";zh\n'
            'o@example.org;"O\'Brien, ""Pat""";RAG;;en\n')
    path = write(tmp_path, "excel.csv", text, newline="\r\n")
    out = invoke("subscribers", "import", path).output
    assert out == ("row 2: added wang@example.cn\nrow 3: added o@example.org\n"
                   "2 added, 0 updated, 0 unchanged, 0 rejected\n")
    wang = store.get_subscriber(db(isolated), "wang@example.cn")
    assert (wang.name, wang.language) == ("王芳", "zh")
    assert wang.topics == ("graph, neural", '"large language model*" AND reasoning')
    assert wang.authors == ("Taiming Lu", "Yang Liu; initials")
    assert store.get_subscriber(db(isolated), "o@example.org").name == "O'Brien, \"Pat\""


def test_tab_separated_utf16_from_excel(isolated, tmp_path):
    path = tmp_path / "unicode.txt"
    path.write_bytes("email\tname\ttopics\r\nx@example.org\t李雷\tCRISPR\r\n".encode("utf-16"))
    assert invoke("subscribers", "import", str(path)).output.endswith("1 added, 0 updated, "
                                                                      "0 unchanged, 0 rejected\n")
    assert store.get_subscriber(db(isolated), "x@example.org").name == "李雷"


def test_non_utf8_file_is_one_line_error_naming_encoding(isolated, tmp_path):
    path = write(tmp_path, "latin.csv", f"{HEADER}\njose@example.org,José,en,UTC,RAG\n",
                 encoding="latin-1")
    result = invoke("subscribers", "import", path, ok=False)
    assert (result.exit_code, result.output) == (1, (
        "Error: latin.csv is not UTF-8 (byte 0xe9 on line 2) - save it as UTF-8, or pass its "
        "encoding, e.g. --encoding gb18030 (Chinese Excel) or --encoding latin-1\n"))
    assert store.list_subscribers(db(isolated)) == []
    invoke("subscribers", "import", path, "--encoding", "latin-1")
    assert store.get_subscriber(db(isolated), "jose@example.org").name == "José"


def test_gb18030_file_with_encoding_option(isolated, tmp_path):
    path = write(tmp_path, "gbk.csv", f"{HEADER}\nliu@example.cn,刘洋,zh,Asia/Shanghai,蛋白质\n",
                 encoding="gb18030")
    assert invoke("subscribers", "import", path, ok=False).output.startswith(
        "Error: gbk.csv is not UTF-8 (byte 0xc1 on line 2)")
    invoke("subscribers", "import", path, "--encoding", "gb18030")
    sub = store.get_subscriber(db(isolated), "liu@example.cn")
    assert (sub.name, sub.topics) == ("刘洋", ("蛋白质",))


def test_unknown_encoding_and_unknown_column(isolated, tmp_path):
    path = write(tmp_path, "a.csv", "email,topic\na@example.org,x\n")
    result = invoke("subscribers", "import", path, "--encoding", "klingon", ok=False)
    assert result.output == ("Error: unknown encoding 'klingon' - try utf-8, gb18030, "
                             "latin-1 or cp1252\n")
    result = invoke("subscribers", "import", path, ok=False)
    assert result.output == ("Error: a.csv: unknown column 'topic' - the columns are "
                             + ", ".join(COLUMNS) + "\n")
    path = write(tmp_path, "b.csv", "name,topics\nAda,x\n")
    assert invoke("subscribers", "import", path, ok=False).output == (
        "Error: b.csv: no email column - the first row must name the columns, "
        "e.g. email,name,topics\n")


# --- rejected rows ---------------------------------------------------------------------------


BAD = (f"{HEADER},frequency,weekday,send_hour\n"
       "ok@example.org,Ok,en,UTC,RAG,,,\n"
       "not-an-address,X,en,UTC,RAG,,,\n"
       "OK@EXAMPLE.org,Dup,en,UTC,RAG,,,\n"
       "q@example.org,Q,en,UTC,(protein AND fold,,,\n"
       "l@example.org,L,fr,UTC,RAG,,,\n"
       "t@example.org,T,en,Mars/Base,RAG,,,\n"
       "w@example.org,W,en,UTC,RAG,daily,tue,\n"
       "h@example.org,H,en,UTC,RAG,,,seven\n")
BAD_LINES = (
    "row 2: added ok@example.org\n"
    "row 3: rejected: 'not-an-address' is not an email address - expected name@domain\n"
    "row 4: rejected OK@example.org: duplicate of row 2\n"
    "row 5: rejected q@example.org: topic '(protein AND fold': missing ')' at position 18\n"
    "row 6: rejected l@example.org: language 'fr' is not available - use one of: en, zh\n"
    "row 7: rejected t@example.org: unknown time zone 'Mars/Base' - use an IANA name such "
    "as Europe/Berlin or Asia/Shanghai\n"
    "row 8: rejected w@example.org: weekday 'tue' applies only to weekly issues - set the "
    "frequency to weekly\n"
    "row 9: rejected h@example.org: send_hour 'seven' is not a whole number\n")


def test_any_rejected_row_imports_nothing(isolated, tmp_path):
    path = write(tmp_path, "bad.csv", BAD)
    result = invoke("subscribers", "import", path, ok=False)
    assert result.exit_code == 1
    assert result.output == BAD_LINES + (
        "Error: 7 rows rejected - nothing imported; fix them, or pass --skip-invalid to "
        "import the other rows\n")
    assert store.list_subscribers(db(isolated)) == []


def test_skip_invalid_imports_the_good_rows(isolated, tmp_path):
    path = write(tmp_path, "bad.csv", BAD)
    out = invoke("subscribers", "import", path, "--skip-invalid").output
    assert out == BAD_LINES + "1 added, 0 updated, 0 unchanged, 7 rejected\n"
    assert [s.email for s in store.list_subscribers(db(isolated))] == ["ok@example.org"]


def test_dry_run_writes_nothing(isolated, tmp_path):
    invoke("subscribers", "add", "ada@example.org", "--topic", "RAG")
    path = write(tmp_path, "a.csv", f"{HEADER}\nada@example.org,Ada,en,UTC,RAG|CRISPR\n"
                 "new@example.org,New,en,UTC,x\n")
    out = invoke("subscribers", "import", path, "--dry-run").output
    assert out == ("row 2: updated ada@example.org (name: (none) -> Ada; added topic: CRISPR)\n"
                   "row 3: added new@example.org\n"
                   "1 added, 1 updated, 0 unchanged, 0 rejected (dry run: nothing written)\n")
    assert [(s.email, s.topics) for s in store.list_subscribers(db(isolated))] == \
        [("ada@example.org", ("RAG",))]


def test_update_keeps_missing_columns_and_status(isolated, tmp_path):
    invoke("subscribers", "add", "ada@example.org", "--name", "Ada", "--lang", "zh",
           "--topic", "RAG", "--author", "Taiming Lu")
    invoke("subscribers", "pause", "ada@example.org")
    path = write(tmp_path, "a.csv", "email,topics,status\nADA@example.org,CRISPR,active\n")
    out = invoke("subscribers", "import", path).output
    assert out == ("row 2: updated ada@example.org (removed topic: RAG; added topic: CRISPR; "
                   "status stays paused, not active)\n"
                   "0 added, 1 updated, 0 unchanged, 0 rejected\n")
    sub = store.get_subscriber(db(isolated), "ada@example.org")
    assert (sub.name, sub.language, sub.status, sub.authors, sub.topics) == \
        ("Ada", "zh", "paused", ("Taiming Lu",), ("CRISPR",))
    history = store.subscriber_history(db(isolated), "ada@example.org")
    assert (history[-1]["event"], history[-1]["origin"]) == ("edited", "import")


def test_import_is_one_transaction(isolated, tmp_path, monkeypatch):
    import newsletter.store.subscribers as store_subs

    calls = []
    real = store_subs.insert_event

    def fail_on_third(*args, **kwargs):
        calls.append(args)
        if len(calls) == 3:
            raise RuntimeError("disk on fire")
        return real(*args, **kwargs)

    monkeypatch.setattr(store_subs, "insert_event", fail_on_third)
    path = write(tmp_path, "a.csv", "email,topics\na@example.org,x\nb@example.org,x\n"
                 "c@example.org,x\n")
    with pytest.raises(RuntimeError, match="disk on fire"):
        roster.import_file(db(isolated), path)
    assert store.list_subscribers(db(isolated)) == []
    assert db(isolated).execute("select count(*) from subscriber_events").fetchone() == (0,)


def test_json_rows_are_checked(isolated, tmp_path):
    data = [{"email": "a@example.org", "topics": "CRISPR"},
            {"email": "b@example.org", "topic": ["x"]},
            "c@example.org",
            {"email": "d@example.org", "send_hour": True}]
    path = write(tmp_path, "a.json", json.dumps(data))
    result = invoke("subscribers", "import", path, ok=False)
    assert result.output == (
        "row 1: rejected: topics must be a list of strings\n"
        "row 2: rejected: unknown field 'topic' - the fields are "
        + ", ".join(COLUMNS) + "\n"
        "row 3: rejected: expected an object with an email field\n"
        "row 4: rejected: send_hour must be a string or a number\n"
        "Error: 4 rows rejected - nothing imported; fix them, or pass --skip-invalid to "
        "import the other rows\n")
    path = write(tmp_path, "b.json", "[{\"email\": \"a@example.org\",}]")
    assert invoke("subscribers", "import", path, ok=False).output == (
        "Error: b.json is not valid JSON (Expecting property name enclosed in double quotes "
        "at line 1 column 28)\n")


def test_import_confirm_keeps_new_people_pending(isolated, tmp_path, monkeypatch):
    path = write(tmp_path, "a.csv", f"{HEADER},status\nn@example.org,N,en,UTC,RAG,\n"
                 "u@example.org,U,en,UTC,RAG,unsubscribed\n")
    result = invoke("subscribers", "import", path, "--confirm", ok=False)
    assert result.output == ("Error: confirmation emails need NEWSLETTER_SECRET to sign "
                             "their token - set it in the environment\n")
    monkeypatch.setenv("NEWSLETTER_SECRET", "s")
    out = invoke("subscribers", "import", path, "--confirm").output
    assert out == ("row 2: added n@example.org (pending: confirmation sent)\n"
                   "row 3: added u@example.org (unsubscribed)\n"
                   "2 added, 0 updated, 0 unchanged, 0 rejected\n")
    assert [p.name for p in (isolated / "outbox").glob("*.eml")] == \
        ["confirm-20261122_n@example.org.eml"]
    assert {s.email: s.status for s in store.list_subscribers(db(isolated))} == \
        {"n@example.org": "pending", "u@example.org": "unsubscribed"}
    history = store.subscriber_history(db(isolated), "n@example.org")
    assert [(e["event"], e["origin"]) for e in history] == \
        [("imported", "import"), ("confirmation sent", "import")]


def test_import_confirm_refuses_a_real_server_from_localhost(isolated, tmp_path, monkeypatch):
    """The list is imported; the confirmation requests wait until the sender is fixed."""
    monkeypatch.setenv("NEWSLETTER_SECRET", "s")
    monkeypatch.setenv("NEWSLETTER_SMTP_URL", "smtps://me:pw@mail.example.org:465")
    path = write(tmp_path, "a.csv", f"{HEADER}\nn@example.org,N,en,UTC,RAG\n")
    out = invoke("subscribers", "import", path, "--confirm").output
    assert out.startswith("row 2: added n@example.org (pending: confirmation NOT sent - "
                          "refusing to send through mail.example.org from ")
    assert {s.email: s.status for s in store.list_subscribers(db(isolated))} == \
        {"n@example.org": "pending"}


# --- export and the round trip ---------------------------------------------------------------


def populate(monkeypatch):
    invoke("subscribers", "add", "wang@example.cn", "--name", "王芳", "--lang", "zh",
           "--timezone", "Asia/Shanghai", "--send-hour", "8", "--max-papers", "15",
           "--author", "Yang Liu; with: Maosong Sun, Yong Cheng", "--author", "Jürgen Schmidhuber",
           "--topic", '"graph, neural" OR "self-attention"', "--topic", "蛋白质",
           "--category", "q-bio.*", "--exclude", "author:Bad Actor", "--exclude", "survey")
    invoke("subscribers", "add", "o@example.org", "--name", 'O\'Brien, "Pat"',
           "--frequency", "weekly", "--weekday", "thu", "--topic", "RAG, retrieval")
    invoke("subscribers", "add", "p@example.org", "--frequency", "weekdays", "--category",
           "cs.CL")
    invoke("subscribers", "pause", "p@example.org")
    monkeypatch.setenv("NEWSLETTER_SECRET", "s")
    invoke("subscribers", "add", "c@example.org", "--topic", "x", "--confirm")
    invoke("subscribers", "confirm", "c@example.org")
    invoke("subscribers", "add", "q@example.org", "--topic", "y", "--confirm")


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_export_then_import_into_an_empty_database_is_exact(isolated, tmp_path, monkeypatch,
                                                            fmt):
    populate(monkeypatch)
    original = everyone(db(isolated))
    out = tmp_path / f"list.{fmt}"
    assert invoke("subscribers", "export", "--out", str(out)).output == \
        f"Exported 5 subscribers to {out}\n"
    empty = tmp_path / "empty.db"
    invoke("--db", str(empty), "subscribers", "import", str(out))
    assert [asdict(s) for s in store.list_subscribers(store.open_db(empty))] == original
    again = invoke("--db", str(empty), "subscribers", "import", str(out)).output
    assert again.endswith("0 added, 0 updated, 5 unchanged, 0 rejected\n")


def test_export_to_stdout(isolated, monkeypatch):
    populate(monkeypatch)
    text = invoke("subscribers", "export").output
    lines = text.splitlines()
    assert lines[0] == ",".join(COLUMNS)
    assert lines[1] == ("c@example.org,,en,UTC,7,daily,,10,active,2026-11-22T09:00:00+00:00,,x,,,"
                        ",auto,3,")
    assert 'o@example.org,"O\'Brien, ""Pat""",en,UTC,7,weekly,thu,10,active,,,"RAG, ' \
        'retrieval",,,,auto,3,' in lines
    data = json.loads(invoke("subscribers", "export", "--format", "json").output)
    assert [d["email"] for d in data] == ["c@example.org", "o@example.org", "p@example.org",
                                          "q@example.org", "wang@example.cn"]
    assert data[4]["topics"] == ['"graph, neural" OR "self-attention"', "蛋白质"]


def test_export_csv_file_has_a_bom_for_excel(isolated, tmp_path):
    invoke("subscribers", "add", "li@example.cn", "--name", "李伟", "--topic", "x")
    out = tmp_path / "x.csv"
    invoke("subscribers", "export", "--out", str(out))
    assert out.read_bytes().startswith(b"\xef\xbb\xbfemail,name,")
    assert "李伟" in out.read_text(encoding="utf-8-sig")


def test_csv_export_refuses_a_value_with_the_list_separator(isolated):
    invoke("subscribers", "add", "a@example.org", "--topic", "a|b")
    result = invoke("subscribers", "export", ok=False)
    assert result.output == ("Error: a@example.org: topics value 'a|b' contains '|', which "
                             "separates list items in CSV - use --format json\n")
    assert json.loads(invoke("subscribers", "export", "--format", "json").output)[0][
        "topics"] == ["a|b"]
