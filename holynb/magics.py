"""IPython magics: ``%%llm`` / ``%llm`` (ask, stream, configure) and ``%%interpret``.

Thin by design: parse the arguments, build the prompt, call the Session, hand the stream to a
view from ``holynb.display``. ``%load_ext holynb`` registers them.
"""

from __future__ import annotations

import asyncio
import os
import re
import traceback
from typing import TYPE_CHECKING, Any

from IPython.core.magic import Magics, line_cell_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

from holynb.errors import HolynbError

if TYPE_CHECKING:
    from holynb.results import ChatResult
    from holynb.session import Session

_default_session: Session | None = None
_FORMATS = ("markdown", "text", "code", "json")
_NAME = re.compile(r"(?<!\{)\{([A-Za-z_][A-Za-z0-9_]*)\}(?!\})")
_CELL_REF = re.compile(r"\b(In|Out)\[(-?\d+)\]")
_ERR_REF = re.compile(r"\bErr\b")
_FENCE = re.compile(r"```[\w+-]*\n(.*?)```", re.DOTALL)


def get_default_session() -> Session:
    """The session the magics use: the real API when a key is set, else the local server."""
    global _default_session
    if _default_session is None:
        from holynb.demo import auto_session

        _default_session, how = auto_session()
        print(how)
    return _default_session


def set_default_session(session: Session) -> None:
    """Make the magics use ``session`` (its model, endpoint, prices and ledger)."""
    global _default_session
    _default_session = session


class PromptError(HolynbError, ValueError):
    """The cell's prompt refers to something that does not exist."""


def build_prompt(text: str, shell: Any) -> str:
    """The prompt with ``{name}`` filled from the user namespace, ``{{``/``}}`` as literal
    braces, ``In[n]``/``Out[n]`` replaced by that cell's input/output and ``Err`` by the last
    error's traceback."""
    ns = shell.user_ns

    def name(match: re.Match[str]) -> str:
        key = match.group(1)
        if key not in ns:
            raise PromptError(
                f"{{{key}}} in the prompt: no variable {key!r} is defined. Define it, or write "
                f"{{{{{key}}}}} for literal braces."
            )
        return str(ns[key])

    def cell(match: re.Match[str]) -> str:
        kind, n = match.group(1), int(match.group(2))
        if kind == "In":
            history = ns.get("In", [])
            if not -len(history) <= n < len(history):
                raise PromptError(f"In[{n}] in the prompt: there is no cell {n} yet.")
            return f"\n```python\n{history[n]}\n```\n"
        outputs = ns.get("Out", {})
        if n not in outputs:
            raise PromptError(f"Out[{n}] in the prompt: cell {n} has no output.")
        return f"\n```\n{outputs[n]!r}\n```\n"

    def err(_match: re.Match[str]) -> str:
        import sys

        value = getattr(sys, "last_value", None)
        if value is None:
            raise PromptError("Err in the prompt: no error has happened in this session yet.")
        return f"\n```\n{_readable_traceback(value, shell)}\n```\n"

    text = _NAME.sub(name, text)
    text = _CELL_REF.sub(cell, text)
    text = _ERR_REF.sub(err, text)
    return text.replace("{{", "{").replace("}}", "}")


def _readable_traceback(error: BaseException, shell: Any) -> str:
    """The traceback a person saw: IPython's own frames dropped, cells named ``Cell In[n]``,
    library files shown from ``site-packages/`` on (no machine paths)."""
    frames = []
    for frame in traceback.extract_tb(error.__traceback__):
        filename = frame.filename
        if "/IPython/" in filename or "/ipykernel/" in filename:
            continue
        label = None
        compiler = getattr(shell, "compile", None)
        if compiler is not None and hasattr(compiler, "format_code_name"):
            label = compiler.format_code_name(filename)
        if label:
            where = f"{label[0]} {label[1]}"
        elif "site-packages/" in filename:
            where = filename.split("site-packages/", 1)[1]
        else:
            where = filename
        frames.append(f"  {where}, line {frame.lineno}, in {frame.name}\n    {frame.line or ''}")
    head = "Traceback (most recent call last):\n" if frames else ""
    last = "".join(traceback.format_exception_only(type(error), error)).strip()
    return head + "\n".join(frames) + ("\n" if frames else "") + last


@magics_class
class LLMMagics(Magics):
    """``%%llm``, ``%llm`` and ``%%interpret``."""

    def __init__(self, shell: Any) -> None:
        super().__init__(shell)
        self.conversation: list[dict[str, Any]] = []
        self._interpreters: dict[tuple[int, str | None, bool], Any] = {}

    @property
    def session(self) -> Session:
        """The session the magics use."""
        return get_default_session()

    # -- %%llm / %llm --------------------------------------------------------------------------

    @magic_arguments()
    @argument("-m", "--model", help="model to ask (default: the session's)")
    @argument("-s", "--system", help="system prompt")
    @argument("-t", "--temperature", type=float, help="sampling temperature")
    @argument("--max-tokens", type=int, help="most tokens to generate")
    @argument("-o", "--out", metavar="VAR", help="store the ChatResult in this variable")
    @argument(
        "-f",
        "--format",
        choices=_FORMATS,
        default="markdown",
        help="markdown (default), text, code (answer goes into a new cell), json (parsed)",
    )
    @argument("--no-stream", action="store_true", help="wait for the whole answer")
    @argument("--chat", action="store_true", help="continue this notebook's conversation")
    @argument("--new", action="store_true", help="start a new conversation")
    @argument("--bg", action="store_true", help="run in the background; a Stop button cancels")
    @argument(
        "--image",
        action="append",
        metavar="PATH_OR_VAR",
        help="send an image: a variable (a figure, PIL image, array, bytes) or a path; repeatable",
    )
    @argument("--image-preset", help="shrink images first: high, medium or low")
    @argument("words", nargs="*", help="line form: the prompt, or config | models | cost | history")
    @line_cell_magic
    def llm(self, line: str, cell: str | None = None) -> Any:
        """Ask a model. The cell body is the prompt; ``{name}`` pulls in variables, ``In[3]``
        and ``Out[3]`` cell inputs and outputs, ``Err`` the last traceback.

        Line form: ``%llm <prompt>``, or ``%llm config [model=... base_url=... budget=...]``,
        ``%llm models``, ``%llm cost``, ``%llm history``.
        """
        if cell is None:
            words = line.split()
            command = words[0] if words else ""
            if command in ("config", "models", "cost", "history"):
                return getattr(self, f"_cmd_{command}")(words[1:])
        if cell is None and not line.lstrip().startswith("-"):
            # "%llm what's new?" is a prompt, not options (and may hold unbalanced quotes)
            args = parse_argstring(self.llm, "")
            args.words = [line]
        else:
            try:
                args = parse_argstring(self.llm, line)
            except Exception as err:  # UsageError or a quoting error
                print(f"holynb: {err} (see %%llm? for the options)")
                return None
        for name in ("model", "system", "out"):
            setattr(args, name, _unquote(getattr(args, name)))
        if args.new:
            self.conversation = []
        prompt = cell if cell is not None else " ".join(args.words)
        if not prompt.strip():
            if args.new:
                print("Started a new conversation.")
                return None
            print("Nothing to ask: put the prompt in the cell (%%llm) or after %llm.")
            return None
        try:
            text = build_prompt(prompt, self.shell)
        except PromptError as err:
            print(f"holynb: {err}")
            return None
        return self._ask(text, args)

    def _messages(self, text: str, chat: bool) -> list[dict[str, Any]]:
        if not chat:
            return [{"role": "user", "content": text}]
        return [*self.conversation, {"role": "user", "content": text}]

    def _ask(self, text: str, args: Any) -> Any:
        from holynb.display import make_view
        from holynb.results import Usage
        from holynb.tokens import estimate_messages_tokens

        session = self.session
        model = args.model or session.model
        messages = self._messages(text, args.chat)
        try:
            images = self._images(args, session)
        except HolynbError as err:  # bad or oversized image: nothing is sent
            print(f"holynb: {err}")
            return None
        prompt_tokens = estimate_messages_tokens(messages)  # no price lookup before sending
        prompt_tokens += sum(i.tokens(getattr(session.settings, "api", "openai")) for i in images)

        def cost_of(completion_tokens: int) -> float | None:
            usage = Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)
            return session.prices.cost(model, usage)

        kwargs: dict[str, Any] = {
            "model": model,
            "system": args.system,
            "temperature": args.temperature,
            "max_tokens": args.max_tokens,
            "tag": f"In[{self.shell.execution_count}]",
        }
        if images:
            kwargs["images"] = images
        view = make_view(model, cost_of=cost_of, images=images)
        if args.format == "text":
            view = _Verbatim(view)  # shown as typed, not rendered as Markdown
        view.show()
        if args.bg:
            self._start_background(session, messages, kwargs, view, args)
            return None
        try:
            if args.no_stream:
                result = session.chat(messages, **kwargs)
                view.append(result.text)
            else:
                for delta in session.stream(messages, **kwargs):
                    view.append(delta)
                result = session.last_result
        except KeyboardInterrupt:
            view.interrupted(session.last_result)
            return None
        except HolynbError as err:
            view.fail(err)
            return None
        view.finish(result)
        return self._deliver(result, messages, args)

    def _images(self, args: Any, session: Session) -> list[Any]:
        """``--image`` values prepared: a name in the user's namespace is that variable, anything
        else a path."""
        if not args.image:
            return []
        from holynb.images import prepare_image

        ns = self.shell.user_ns
        images = []
        for value in args.image:
            value = _unquote(value) or ""
            source = ns[value] if value.isidentifier() and value in ns else value
            name = None if isinstance(source, str | os.PathLike) else value
            images.append(
                prepare_image(
                    source,
                    preset=_unquote(args.image_preset),
                    max_bytes=session.max_image_bytes,
                    name=name,
                )
            )
        return images

    def _start_background(
        self,
        session: Session,
        messages: list[dict[str, Any]],
        kwargs: dict[str, Any],
        view: Any,
        args: Any,
    ) -> None:
        from holynb._loop import default_loop

        async def work() -> None:
            try:
                async for delta in session.astream(messages, **kwargs):
                    view.append(delta)
            except asyncio.CancelledError:
                view.interrupted(session.last_result)
                raise
            except HolynbError as err:
                view.fail(err)
                return
            result = session.last_result
            view.finish(result)
            self._deliver(result, messages, args, background=True)

        future = asyncio.run_coroutine_threadsafe(work(), default_loop().loop)
        view.set_stop(future.cancel)
        self.shell.user_ns["_llm_task"] = future

    def _deliver(
        self,
        result: ChatResult | None,
        messages: list[dict[str, Any]],
        args: Any,
        *,
        background: bool = False,
    ) -> Any:
        if result is None:
            return None
        ns = self.shell.user_ns
        ns["_llm"] = result.text
        if args.out:
            ns[args.out] = result
        if args.chat:
            self.conversation = [*messages, {"role": "assistant", "content": result.text}]
        if args.format == "code":
            blocks = _FENCE.findall(result.text)
            code = (blocks[0] if blocks else result.text).strip("\n")
            if not background:
                self.shell.set_next_input(code, replace=False)
            ns["_llm_code"] = code
        elif args.format == "json":
            from holynb.jsonx import extract_json

            try:
                value = extract_json(result.text)
            except HolynbError as err:
                print(f"holynb: {err}")
                return None
            ns["_llm_json"] = value
            if args.out:
                ns[args.out + "_json"] = value
            if not background:
                from IPython.display import JSON, display

                display(JSON(value))
        return None

    # -- %llm subcommands ----------------------------------------------------------------------

    def _cmd_config(self, words: list[str]) -> None:
        from holynb.session import Session

        current = self.session
        if words:
            changes: dict[str, str] = {}
            for word in words:
                key, sep, value = word.partition("=")
                if not sep or key not in ("model", "base_url", "budget", "api_key"):
                    print(
                        f"holynb: cannot set {word!r}: use model=, base_url=, budget= or "
                        "api_key= (better: set HOLYSHEEP_API_KEY in the environment)."
                    )
                    return
                changes[key] = value
            settings = current.settings
            fresh = Session(
                model=changes.get("model", current.model),
                base_url=changes.get("base_url", current.base_url),
                api_key=changes.get("api_key") or settings.api_key,
                retry=settings.retry,
                timeout=settings.timeout,
                concurrency=settings.limits.concurrency,
                rpm=settings.limits.rpm,
                tpm=settings.limits.tpm,
                log_path="",  # not HOLYNB_LOG_PATH again: the open log carries over below
            )
            fresh.prices = current.prices  # the prices, the log and the ledger carry over
            fresh._store = current._store
            fresh._ledger.extend(current.records)
            budget = float(changes["budget"]) if "budget" in changes else current.budget_usd
            fresh.budget_usd = budget  # after the ledger: past spending counts
            set_default_session(fresh)
            current = fresh
        key = current.settings.api_key
        rows = [
            ("model", current.model),
            ("base_url", current.base_url),
            ("api key", f"set ({key.masked})" if key else "missing"),
            ("budget", "none" if current.budget_usd is None else f"${current.budget_usd:,.4f}"),
            ("calls", str(len(current.records))),
            ("spent", f"${current.total_cost_usd:.4f}"),
        ]
        print("\n".join(f"{k:>9}: {v}" for k, v in rows))

    def _cmd_models(self, _words: list[str]) -> None:
        try:
            models = self.session.models()
        except HolynbError as err:
            print(f"holynb: {err}")
            return
        print("\n".join(models))

    def _cmd_cost(self, _words: list[str]) -> Any:
        from IPython.display import display

        display(self.session)

    def _cmd_history(self, words: list[str]) -> Any:
        n = int(words[0]) if words and words[0].isdigit() else 20
        if self.conversation:
            print(f"Conversation ({len(self.conversation)} messages):")
            for m in self.conversation:
                print(f"  {m['role']}: {_preview(str(m['content']))}")
        frame = self.session.ledger
        columns = [
            "ts",
            "tag",
            "model",
            "kind",
            "ok",
            "prompt_tokens",
            "completion_tokens",
            "cost_usd",
            "latency_ms",
        ]
        return frame[columns].tail(n)

    # -- %%interpret ---------------------------------------------------------------------------

    @magic_arguments()
    @argument("-m", "--model", help="model that 'executes' the code")
    @argument("--verify", action="store_true", help="also run it in a local sandbox and compare")
    @argument("-o", "--out", metavar="VAR", help="store the ExecutionResult in this variable")
    @line_cell_magic
    def interpret(self, line: str, cell: str | None = None) -> Any:
        """Send the cell's code to a model for model-side execution and show the result card."""
        from IPython.display import display

        from holynb.interpreter import CodeInterpreter, result_card_html

        args = parse_argstring(self.interpret, line)
        code = cell if cell is not None else ""
        if not code.strip():
            print("Nothing to run: put the code in the cell under %%interpret.")
            return None
        key = (id(self.session), _unquote(args.model), args.verify)
        interpreter = self._interpreters.get(key)
        if interpreter is None:  # one per session: it remembers what the endpoint accepts
            interpreter = CodeInterpreter(self.session, model=key[1], verify=args.verify)
            self._interpreters[key] = interpreter
        try:
            result = interpreter.run(code)
        except KeyboardInterrupt:
            print("Interrupted.")
            return None
        except HolynbError as err:
            from holynb.display import error_html, error_text

            display({"text/html": error_html(err), "text/plain": error_text(err)}, raw=True)
            return None
        if args.out:
            self.shell.user_ns[args.out] = result
        display({"text/html": result_card_html(result), "text/plain": str(result)}, raw=True)
        return None


class _Verbatim:
    """A view wrapper for ``-f text``: the answer shown verbatim (a fenced block) in a widget;
    plain-text views already show it as it is."""

    FENCE = "~~~~~~~~"  # longer than any fence a model writes, so the answer cannot close it

    def __init__(self, view: Any) -> None:
        from holynb.display import StreamView

        self._view = view
        self._fenced = isinstance(view, StreamView)

    def show(self) -> None:
        self._view.show()
        if self._fenced:
            self._view.append(self.FENCE + "text\n")

    def _wrap(self, result: ChatResult | None) -> ChatResult | None:
        from dataclasses import replace

        if result is None or not self._fenced:
            return result
        return replace(result, text=f"{self.FENCE}text\n{result.text}\n{self.FENCE}")

    def finish(self, result: ChatResult) -> None:
        self._view.finish(self._wrap(result))

    def interrupted(self, result: ChatResult | None = None) -> None:
        self._view.interrupted(self._wrap(result))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._view, name)


def _unquote(value: str | None) -> str | None:
    if value and len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


def _preview(text: str, width: int = 100) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def register(shell: Any) -> None:
    """Register the magics with an IPython shell (what ``%load_ext holynb`` calls)."""
    shell.register_magics(LLMMagics)


__all__ = ["LLMMagics", "build_prompt", "get_default_session", "set_default_session"]
