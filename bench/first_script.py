"""A whole cold start as a script sees it: `python`, import, one non-streamed answer with the
library's sync API, exit. run.py times the process from outside (wall and CPU), so interpreter
start-up and shutdown count, as they do for a user's script or CLI call.

    python bench/first_script.py holynb http://127.0.0.1:PORT/v1

Only `sys` is imported before the library. Prints `{"available": true}` (or false, with a reason,
for libraries without a sync client).
"""

import sys

API_KEY = "sk-bench"
MODEL = "bench"
MESSAGES = [{"role": "user", "content": "hi"}]


def answer(lib: str, url: str) -> str:
    if lib in ("httpx", "httpx2"):
        http = __import__(lib)
        auth = {"Authorization": f"Bearer {API_KEY}"}
        with http.Client(base_url=url, headers=auth) as client:
            body = {"model": MODEL, "messages": MESSAGES, "max_tokens": 16}
            response = client.post("/chat/completions", json=body)
            response.raise_for_status()
            return response.json()["choices"][0]["message"]["content"]
    if lib == "openai":
        from openai import OpenAI

        with OpenAI(base_url=url, api_key=API_KEY, max_retries=0) as client:
            reply = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=16)
            return reply.choices[0].message.content or ""
    if lib == "holynb":
        import holynb

        with holynb.Session(model=MODEL, base_url=url, api_key=API_KEY, max_retries=0) as s:
            return s.chat("hi", max_tokens=16).text
    raise LookupError(f"{lib} has no sync client")


def main(argv: list[str]) -> None:
    lib, url = argv
    try:
        text = answer(lib, url)
    except LookupError as exc:
        print(f'{{"available": false, "reason": "{exc}"}}')
        return
    if not text:
        raise SystemExit("empty answer")
    print('{"available": true}')


if __name__ == "__main__":
    main(sys.argv[1:])
