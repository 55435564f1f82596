"""Unknown keyword arguments are refused before anything is sent (issue 21, item 8)."""

from __future__ import annotations

import pytest

import holynb
from tests.helpers import session_for


def sent(server) -> int:
    return server.stats.requests


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda s: s.map(["a", "b"], budget_usd=0.01), "budget_usd is a Session setting"),
        (lambda s: s.chat("a", max_token=5), "did you mean max_tokens"),
        (lambda s: s.chat("a", temprature=0.2), "did you mean temperature"),
        (lambda s: list(s.stream("a", max_tokns=5)), "did you mean max_tokens"),
        (lambda s: s.compare(["a"], models=["local/echo"], topp=0.5), "did you mean top_p"),
        (lambda s: s.batch(["a"], max_tokens=5, log_path="x"), "log_path is a Session setting"),
    ],
    ids=["map-budget_usd", "chat-max_token", "chat-temprature", "stream", "compare", "batch"],
)
def test_an_unknown_keyword_is_a_type_error_and_nothing_is_sent(local, tmp_path, monkeypatch,
                                                                call, match):  # fmt: skip
    monkeypatch.setenv("HOLYNB_HOME", str(tmp_path))
    s = session_for(local)
    before = sent(local)
    with pytest.raises(TypeError, match=match) as err:
        call(s)
    assert "Nothing was sent" in str(err.value) and "extra_body" in str(err.value)
    assert sent(local) == before and len(s.ledger) == 0
    assert not list(tmp_path.glob("batches/*"))


def test_extra_body_goes_into_the_request_as_given(local):
    s = session_for(local)
    with pytest.raises(holynb.BadRequestError, match="Unrecognized request argument supplied: "
                       "acme_route"):  # fmt: skip
        s.chat("a", max_tokens=5, extra_body={"acme_route": "eu"})  # sent: the server judges
    s = session_for(local, api="anthropic")
    local.reset()
    assert s.chat("a", max_tokens=5, extra_body={"top_k": 3}).text
    body = local.requests_log[-1]["body"]
    assert body["top_k"] == 3 and "extra_body" not in body


def test_extra_body_must_be_a_dict(local):
    with pytest.raises(TypeError, match="extra_body must be a dict"):
        session_for(local).chat("a", extra_body=["top_k", 3])


def test_every_chat_parameter_of_both_formats_is_accepted():
    from holynb.parameters import check_params

    check_params({"top_p": 1, "stop": ["x"], "n": 2, "seed": 1, "response_format": {}}, "chat")
    check_params({"top_k": 3, "stop_sequences": ["x"], "thinking": {}}, "chat")
    with pytest.raises(TypeError, match="did you mean seed"):
        check_params({"sead": 1}, "chat")
