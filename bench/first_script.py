"""A whole cold start as a script sees it: `python`, import, one non-streamed answer with the
library's sync API, exit. run.py times the process from outside (wall and CPU), so interpreter
start-up and shutdown count, as they do for a user's script or CLI call.

    python bench/first_script.py holynb http://127.0.0.1:PORT/v1
    python bench/first_script.py holynb https://127.0.0.1:PORT/v1 gpt-4.1          # another model
    python bench/first_script.py holynb http://127.0.0.1:PORT/v1 bench priced      # prices=

The optional third argument is the model to ask for (default `bench`, which no price table
knows); `priced` as the fourth gives holynb that model's price with `prices=`. For an HTTPS URL
with a self-signed certificate, point `SSL_CERT_FILE` at a bundle that holds it (httpx, httpx2
and the openai SDK read it). Only `sys` is imported before the library. Prints
`{"available": true}` (or false, with a reason, for libraries without a sync client).
"""

import sys

API_KEY = "sk-bench"
MODEL = "bench"
MESSAGES = [{"role": "user", "content": "hi"}]


def answer(lib: str, url: str, model: str = MODEL, priced: bool = False) -> str:
    if lib in ("httpx", "httpx2"):
        http = __import__(lib)
        auth = {"Authorization": f"Bearer {API_KEY}"}
        with http.Client(base_url=url, headers=auth) as client:
            body = {"model": model, "messages": MESSAGES, "max_tokens": 16}
            response = client.post("/chat/completions", json=body)
            response.raise_for_status()
            return response.json()["choices"][0]["message"]["content"]
    if lib == "openai":
        from openai import OpenAI

        with OpenAI(base_url=url, api_key=API_KEY, max_retries=0) as client:
            reply = client.chat.completions.create(model=model, messages=MESSAGES, max_tokens=16)
            return reply.choices[0].message.content or ""
    if lib == "holynb":
        import holynb

        prices = {model: {"input": 1.0, "output": 2.0}} if priced else None
        with holynb.Session(
            model=model, base_url=url, api_key=API_KEY, max_retries=0, prices=prices
        ) as s:
            return s.chat("hi", max_tokens=16).text
    raise LookupError(f"{lib} has no sync client")


def main(argv: list[str]) -> None:
    lib, url, *rest = argv
    model = rest[0] if rest else MODEL
    try:
        text = answer(lib, url, model, priced=rest[1:] == ["priced"])
    except LookupError as exc:
        print(f'{{"available": false, "reason": "{exc}"}}')
        return
    if not text:
        raise SystemExit("empty answer")
    print('{"available": true}')


if __name__ == "__main__":
    main(sys.argv[1:])
