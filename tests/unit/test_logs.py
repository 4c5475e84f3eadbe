import json

from chalicelib.infra.logs import correlation_id, log


def test_one_json_line_with_the_correlation_id(capsys, monkeypatch):
    monkeypatch.delenv("LOG_LEVEL", raising=False)
    token = correlation_id.set("corr-9")
    try:
        log("something_happened", customer_id="c-1")
    finally:
        correlation_id.reset(token)
    line = json.loads(capsys.readouterr().err)
    assert (line["event"], line["level"], line["correlation_id"], line["customer_id"]) == (
        "something_happened", "info", "corr-9", "c-1")


def test_log_level_filters(capsys, monkeypatch):
    monkeypatch.setenv("LOG_LEVEL", "warning")
    log("chatty")
    log("trouble", level="error")
    lines = [json.loads(x) for x in capsys.readouterr().err.splitlines()]
    assert [x["event"] for x in lines] == ["trouble"]
