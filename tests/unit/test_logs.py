import json

from chalicelib.infra.logs import correlation_id, log


def test_one_json_line_with_the_correlation_id(capfd, monkeypatch):
    monkeypatch.delenv("LOG_LEVEL", raising=False)
    token = correlation_id.set("corr-9")
    try:
        log("something_happened", customer_id="c-1")
    finally:
        correlation_id.reset(token)
    line = json.loads(capfd.readouterr().err)
    assert (line["message"], line["level"], line["correlation_id"], line["customer_id"]) == (
        "something_happened", "INFO", "corr-9", "c-1")
    assert line["service"] == "customer-service" and line["timestamp"]


def test_log_level_filters(capfd, monkeypatch):
    monkeypatch.setenv("LOG_LEVEL", "warning")
    log("chatty")
    log("trouble", level="error")
    lines = [json.loads(x) for x in capfd.readouterr().err.splitlines()]
    assert [x["message"] for x in lines] == ["trouble"]
