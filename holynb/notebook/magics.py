"""IPython magics: ``%%llm`` / ``%llm`` (ask, stream, configure) and ``%%interpret``.

Thin by design: parse the arguments, fill the prompt (``holynb.notebook.prompt_template``),
call the Session, hand the stream to a view from ``holynb.notebook.display``. ``%load_ext
holynb`` registers them.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class, no_var_expand
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

from holynb.errors import HolynbError, PromptError
from holynb.notebook.magic_errors import for_magic
from holynb.notebook.prompt_template import build_prompt, cell_number, readable_traceback
from holynb.units import money

if TYPE_CHECKING:
    from holynb.cache import CallCache
    from holynb.notebook.views import AnswerView
    from holynb.results import ChatResult
    from holynb.session import Session

_default_session: Session | None = None
_FORMATS = ("markdown", "text", "code", "json")
_API_NAMES = {"openai": "openai (chat completions)", "anthropic": "anthropic (messages)"}
_KEPT_TRACEBACKS = 50  # the latest cells' tracebacks, for {Err[n]}
_FENCE = re.compile(r"```[\w+-]*\n(.*?)```", re.DOTALL)


def get_default_session() -> Session:
    """The session the magics use: the real API when a key is set, else the local server."""
    global _default_session
    if _default_session is None:
        from holynb.offline import auto_session

        _default_session, how = auto_session()
        print(how)
    return _default_session


def set_default_session(session: Session) -> None:
    """Make the magics use ``session`` (its model, endpoint, prices and ledger)."""
    global _default_session
    _default_session = session


def _options(magic: Any, line: str, name: str) -> Any:
    """The parsed option line; bad options are a one-line ``UsageError``."""
    try:
        return parse_argstring(magic, line)
    except UsageError as err:
        raise UsageError(f"%%{name}: {err} (see %%{name}? for the options)") from None
    except ValueError as err:  # shlex: an unclosed quote
        raise UsageError(f"%%{name}: {err} in the option line {line.strip()!r}.") from None


def _cell_id(shell: Any) -> str:
    """The running cell's id from the frontend (JupyterLab, Notebook 7, VS Code), else ""."""
    try:
        metadata = shell.kernel.get_parent().get("metadata") or {}
    except Exception:
        return ""
    return str(metadata.get("cellId") or "")


@magics_class
class LLMMagics(Magics):
    """``%%llm``, ``%llm`` and ``%%interpret``."""

    shell: Any  # always set: these magics are registered on a running shell

    def __init__(self, shell: Any) -> None:
        super().__init__(shell)
        self.conversation: list[dict[str, Any]] = []
        self._interpreters: dict[tuple[int, str | None, bool], Any] = {}
        self.tracebacks: dict[int, str] = {}  # cell number -> its traceback, for {Err[n]}
        self._inserted: set[tuple[str, str]] = set()  # (cell id, prompt) that inserted code
        if shell is not None:
            shell.events.register("post_run_cell", self._remember_error)

    def _below_holds(self, cell_id: str, code: str) -> bool:
        from holynb.notebook.stored import cell_below

        raw = getattr(self.shell.history_manager, "input_hist_raw", None) or [""]
        below = cell_below(self.shell, cell_id, raw[-1])
        return below is not None and below.strip() == code.strip()

    def _remember_error(self, result: Any) -> None:
        error = result.error_in_exec or result.error_before_exec
        number = result.execution_count
        if error is None or not isinstance(number, int):
            return
        # text, not the exception: its frames would keep the cell's locals alive
        self.tracebacks[number] = readable_traceback(error, self.shell)
        for old in sorted(self.tracebacks)[:-_KEPT_TRACEBACKS]:
            del self.tracebacks[old]

    @property
    def session(self) -> Session:
        """The session the magics use."""
        return get_default_session()

    # -- %%llm / %llm --------------------------------------------------------------------------

    @magic_arguments()
    @argument(
        "-m",
        "--model",
        help="model to ask (default: the session's); several, comma-separated, answer side by "
        "side (-o VAR keeps their long frame)",
    )
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
        "-n",
        "--no-interpolate",
        action="store_true",
        help="send the prompt as typed: no {name}, {In[n]}, {Out[n]}, {Err} filled in",
    )
    @argument("--no-cache", action="store_true", help="neither read nor write the response cache")
    @argument("--refresh", action="store_true", help="ask again and replace the cached answer")
    @argument(
        "--image",
        action="append",
        metavar="PATH_OR_VAR",
        help="send an image: a variable (a figure, PIL image, array, bytes) or a path; repeatable",
    )
    @argument("--image-preset", help="shrink images first: high, medium or low")
    @argument("--service-tier", help="the provider's service tier, e.g. flex (priced by the tier)")
    @argument(
        "--prompt-cache",
        choices=("5m", "1h"),
        help="Anthropic's format: cache the system prompt and conversation prefix (5m or 1h)",
    )
    @argument("words", nargs="*", help="line form only: the prompt")
    @no_var_expand  # the prompt is filled once, by build_prompt; the option line is expanded below
    @line_cell_magic
    def llm(self, line: str, cell: str | None = None) -> Any:
        """Ask a model: the cell under the %%llm line is the prompt (%llm PROMPT: one line).

        Examples:

          %%llm --max-tokens 200
          Explain {In[-1]} in two sentences.

          %llm What is a p-value?

          %%llm -m gpt-4.1-mini -o answer -f json
          List three primary colours as a JSON array.

        In the prompt, {name} pulls in a variable, {In[3]} / {Out[3]} a cell's input or
        output ({In[-1]}: the cell before this one), {Err} the last traceback and {Err[3]}
        cell 3's; any other brace text (LaTeX, code, JSON) is sent as written, and -n sends the
        whole cell as typed. The option line takes {name} / $name too.

        Other commands: %llm config [model=... base_url=... api=... budget=...],
        %llm models, %llm cost [--team], %llm history, %llm cache [clear | on [PATH] | off].
        """
        if cell is None:
            words = line.split()
            command = words[0] if words else ""
            if command in ("config", "models", "cost", "history", "cache"):
                words = self._expand(line).split()
                return getattr(self, f"_cmd_{command}")(words[1:])
        if cell is None and not line.lstrip().startswith("-"):
            # "%llm what's new?" is a prompt, not options (and may hold unbalanced quotes)
            args = parse_argstring(self.llm, "")
            args.words = [line]
        elif cell is None:
            args = _options(self.llm, line, "llm")
        else:
            args = _options(self.llm, self._expand(line), "llm")
            if args.words:  # e.g. "max-tokens 5" without its "--"
                raise UsageError(
                    f"%%llm: unknown words in the option line: {' '.join(args.words)!r}. "
                    "Options start with - or -- (e.g. --max-tokens 5); the prompt goes in the "
                    "cell below. See %%llm? for the options."
                )
        for name in ("model", "system", "out"):
            setattr(args, name, _unquote(getattr(args, name)))
        if args.new:
            self.conversation = []
        prompt = cell if cell is not None else " ".join(args.words)
        if not prompt.strip():
            if args.new:
                print("Started a new conversation.")
                return None
            raise UsageError(
                "%%llm: Nothing to ask: put the prompt in the cell (%%llm) or after %llm."
            )
        if args.no_interpolate:
            return self._ask(prompt, args)
        try:
            filled = build_prompt(prompt, self.shell, self.tracebacks)
        except PromptError as err:  # nothing is sent, and the cell fails (Run All stops)
            raise UsageError(f"%%llm: {err}") from None
        return self._ask(filled.text, args, note=filled.note)

    def _expand(self, line: str) -> str:
        # IPython's own {name}/$name expansion, as for any magic's line, done here because the
        # prompt must not be expanded twice: frames up are _expand, llm, run_*_magic, the caller.
        return str(self.shell.var_expand(line, 3))

    def _messages(self, text: str, chat: bool) -> list[dict[str, Any]]:
        if not chat:
            return [{"role": "user", "content": text}]
        return [*self.conversation, {"role": "user", "content": text}]

    def _ask(self, text: str, args: Any, note: str = "") -> Any:
        from holynb.notebook.display import make_view

        session = self.session
        try:
            images = self._images(args, session)
        except HolynbError as err:  # bad or oversized image: nothing is sent, the cell fails
            raise UsageError(f"holynb: {err}") from None
        if args.model and "," in args.model:  # -m a,b,c: every model at once, side by side
            return self._ask_models(session, text, args, images)
        model = args.model or session.model
        messages = self._messages(text, args.chat)
        if images:  # in the messages themselves, so that --chat keeps them in the conversation
            from holynb.images import attach_images

            messages = attach_images(messages, images)
        cost_of = session.meter.running_cost(model, messages)  # images by the wire's rule

        kwargs: dict[str, Any] = {
            "model": model,
            "system": args.system,
            "temperature": args.temperature,
            "max_tokens": args.max_tokens,
            "tag": f"In[{cell_number(self.shell)}]",
            "cache": _cache_choice(args),
            **_cheaper_paths(args),
        }
        view: AnswerView = make_view(
            model, cost_of=cost_of, note=note, images=images, snapshots=args.bg
        )
        if args.format == "text":
            view = _Verbatim(view)  # shown as typed, not rendered as Markdown
        view.show()
        if args.bg:
            self._start_background(session, messages, kwargs, view, args)
            return None
        stream = None
        try:
            if args.no_stream:
                result = session.chat(messages, **kwargs)
                view.append(result.text)
            else:
                stream = session.stream(messages, **kwargs)
                stream.on_retry = view.retrying  # "429, retrying 1/2 in 0.5 s"
                for delta in stream:
                    view.append(delta)
                ended = stream.result  # this call's own, whatever else is running
                assert ended is not None  # set once the stream has ended
                result = ended
        except KeyboardInterrupt:
            partial = stream.result if stream is not None else None
            view.interrupted(partial)
            self._keep_partial(partial, args)
            return None
        except HolynbError as err:
            view.fail(for_magic(err))
            self._keep_partial(getattr(err, "partial", None), args)
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
        view: AnswerView,
        args: Any,
    ) -> None:
        from holynb._loop import default_loop

        async def work() -> None:
            stream = session.astream(messages, **kwargs)
            stream.on_retry = view.retrying
            try:
                async for delta in stream:
                    view.append(delta)
            except asyncio.CancelledError:  # the Stop button
                view.interrupted(stream.result)
                self._keep_partial(stream.result, args)
                raise
            except HolynbError as err:
                view.fail(for_magic(err))
                self._keep_partial(stream.result, args)
                return
            result = stream.result
            if result is None:
                return
            view.finish(result)
            self._deliver(result, messages, args, background=True)

        future = asyncio.run_coroutine_threadsafe(work(), default_loop().loop)
        view.set_stop(future.cancel)
        self.shell.user_ns["_llm_task"] = future

    def _keep_partial(self, partial: ChatResult | None, args: Any) -> None:
        """After a call that did not finish (interrupted, stopped, failed): ``_llm`` and ``-o
        VAR`` hold what arrived of it (and was paid for), or are unset if nothing did; never
        an earlier call's answer."""
        ns = self.shell.user_ns
        for name, value in (("_llm", partial and partial.text), (args.out, partial)):
            if name and partial is not None:
                ns[name] = value
            elif name:
                ns.pop(name, None)

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
            code = blocks[0].strip("\n") if blocks else ""
            ns["_llm_code"] = code
            # One inserted cell per cell and prompt: running the cell again (Run All) does not
            # add another one, nor does a saved notebook whose cell below holds this code
            # already (a tutorial's Run All); an answer without a code block inserts nothing.
            key = (_cell_id(self.shell), _content_text(messages[-1]["content"]))
            if not code:
                print("holynb: the answer has no code block, so no cell was inserted.")
            elif not background and key not in self._inserted:
                self._inserted.add(key)
                if not self._below_holds(key[0], code):
                    self.shell.set_next_input(code, replace=False)
        elif args.format == "json":
            from holynb.jsonx import extract_json

            try:
                value = extract_json(result.text)
            except HolynbError as err:  # the answer stays in _llm (and VAR); the cell fails
                if background:
                    print(f"holynb: {_short(err)}")
                    return None
                raise UsageError(f"holynb: {_short(err)}") from None
            ns["_llm_json"] = value
            if args.out:
                ns[args.out + "_json"] = value
            if not background:
                from IPython.core.display import JSON
                from IPython.display import display

                display(JSON(value))
        return None

    def _ask_models(self, session: Session, text: str, args: Any, images: list[Any]) -> None:
        """``%%llm -m a,b,c``: the prompt (and its ``--image``s) to every model at once, streamed
        side by side; ``-o`` keeps the long frame (as ``Session.compare``), ``_llm`` maps each
        model to its text."""
        from IPython.core.error import UsageError

        from holynb.compare import models_from
        from holynb.images import attach_images
        from holynb.notebook.side_by_side import make_columns_view, stream_to_view

        unsupported = [
            flag
            for flag, used in (
                ("--chat", args.chat),
                ("--bg", args.bg),
                (f"-f {args.format}", args.format in ("code", "json")),
            )
            if used
        ]
        if unsupported:
            raise UsageError(
                f"%%llm: {', '.join(unsupported)} takes one model; with several (-m a,b,c) the "
                "answers stream side by side. Pick one model for it."
            )
        models = models_from(args.model)
        messages = attach_images(self._messages(text, False), images)

        def cost_of(model: str) -> Callable[[int], float | None]:
            return session.meter.running_cost(model, messages)

        view = make_columns_view(models, cost_of=cost_of).show()
        frame = stream_to_view(
            session, text, models, view, system=args.system, temperature=args.temperature,
            max_tokens=args.max_tokens, tag=f"In[{self.shell.execution_count}]",
            cache=_cache_choice(args), **({"images": images} if images else {}),
            **_cheaper_paths(args),
        )  # fmt: skip
        ns = self.shell.user_ns
        ns["_llm"] = dict(zip(models, frame["text"].fillna(""), strict=True))
        if args.out:
            ns[args.out] = frame

    # -- %llm subcommands ----------------------------------------------------------------------

    def _cmd_config(self, words: list[str]) -> None:
        from holynb._config import APIS
        from holynb.session import UNCHANGED

        current = self.session
        if words:
            changes: dict[str, str] = {}
            for word in words:
                key, sep, value = word.partition("=")
                if not sep or key not in ("model", "base_url", "budget", "api_key", "api"):
                    raise UsageError(
                        f"%llm config: cannot set {word!r}: use model=, base_url=, api=, "
                        "budget= or api_key= (better: set HOLYSHEEP_API_KEY in the environment)."
                    )
                changes[key] = value
            if changes.get("api", "openai").lower() not in APIS:
                raise UsageError(
                    f"%llm config: api= takes {' or '.join(APIS)}, not {changes['api']!r}."
                )
            fresh = current.derive(  # the prices, the log, the cache and the ledger carry over
                model=changes.get("model"),
                api=changes.get("api"),
                base_url=changes.get("base_url"),
                api_key=changes.get("api_key"),
                budget_usd=float(changes["budget"]) if "budget" in changes else UNCHANGED,
            )
            set_default_session(fresh)
            current = fresh
        rows = [
            ("model", current.model),
            ("base_url", current.base_url),
            ("api", _API_NAMES.get(current.settings.api, current.settings.api)),
            ("api key", _key_state(current)),
            ("budget", "none" if current.budget_usd is None else money(current.budget_usd)),
            ("calls", str(len(current.records))),
            ("spent", current.cost_summary()),
        ]
        print("\n".join(f"{k:>9}: {v}" for k, v in rows))

    def _cmd_models(self, _words: list[str]) -> None:
        try:
            models = self.session.models()
        except HolynbError as err:
            raise UsageError(f"%llm models: {_short(err)}") from None
        print("\n".join(models))

    def _cmd_cost(self, words: list[str]) -> Any:
        from IPython.display import display

        if words == ["--team"]:  # every user's calls, from the team database
            from holynb.errors import ConfigurationError

            try:
                return self.session.summary(by="user")
            except ConfigurationError as err:
                raise UsageError(f"%llm cost --team: {err}") from None
        if words:
            raise UsageError(f"%llm cost takes --team or nothing, got {' '.join(words)!r}.")
        from holynb.report import summary_html, summary_text

        s = self.session
        figures = (s.summary(), s.total_cost_usd, s.unpriced_calls, f"holynb session: {s.base_url}")
        display(
            {"text/html": summary_html(*figures), "text/plain": summary_text(*figures)}, raw=True
        )

    def _cmd_cache(self, words: list[str]) -> None:
        from holynb.cache import cache_report

        session = self.session
        command = words[0] if words else "stats"
        if command == "on":
            session.cache = words[1] if len(words) > 1 else True
        elif command == "off":
            session.cache = False
            print("Response cache off for this session.")
            return
        elif command == "clear" and session.cache is not None:
            print(f"Forgot {session.cache.clear()} cached answers.")
        elif command not in ("stats", "clear"):
            raise UsageError(
                "%llm cache: use %llm cache, %llm cache clear, %llm cache on [PATH], or off."
            )
        print(cache_report(session.cache))

    def _cmd_history(self, words: list[str]) -> None:
        # the conversation only (%%llm --chat); every call is in the ledger (%llm cost)
        n = int(words[0]) if words and words[0].isdigit() else None
        if not self.conversation:
            print(
                "No conversation yet: %%llm --chat starts one (every call, chat or not, is in "
                "the session's ledger: s.ledger, %llm cost)."
            )
            return
        shown = self.conversation if n is None else self.conversation[-n:]
        more = "" if len(shown) == len(self.conversation) else f", the last {len(shown)}"
        print(f"Conversation ({len(self.conversation)} messages{more}):")
        for m in shown:
            print(f"  {m['role']}: {_preview(_content_text(m['content']))}")

    # -- %%interpret ---------------------------------------------------------------------------

    @magic_arguments()
    @argument("-m", "--model", help="model that 'executes' the code")
    @argument("--verify", action="store_true", help="also run it in a local sandbox and compare")
    @argument("-o", "--out", metavar="VAR", help="store the ExecutionResult in this variable")
    @line_cell_magic
    def interpret(self, line: str, cell: str | None = None) -> Any:
        """Send the cell's code to a model for model-side execution and show the result card."""
        from IPython.display import display

        from holynb.interpreter.code_interpreter import CodeInterpreter, result_card_html

        args = _options(self.interpret, line, "interpret")
        code = cell if cell is not None else ""
        if not code.strip():
            raise UsageError("%%interpret: Nothing to run: put the code in the cell under it.")
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
            from holynb.formatting import error_html, error_text

            shown = for_magic(err)
            display({"text/html": error_html(shown), "text/plain": error_text(shown)}, raw=True)
            return None
        if args.out:
            self.shell.user_ns[args.out] = result
        display({"text/html": result_card_html(result), "text/plain": str(result)}, raw=True)
        return None


def _readable_help(doc: str | None, name: str) -> str:
    """IPython's magic_arguments help without its reStructuredText (the ``::`` block marker)
    and with the cell form in the usage line: ``%%llm [-m MODEL] ...``."""
    text = doc or ""
    head = f"::\n\n  %{name}"
    if text.startswith(head):
        usage, sep, rest = text[len(head) :].partition("\n\n")
        usage = usage.replace("\n ", "\n  ")  # one more %: the wrapped lines shift by one
        text = f"Usage:\n\n  %%{name}{usage}{sep}{rest}"
    return text.replace("``", "")


LLMMagics.llm.__doc__ = _readable_help(LLMMagics.llm.__doc__, "llm")
LLMMagics.interpret.__doc__ = _readable_help(LLMMagics.interpret.__doc__, "interpret")


class _Verbatim:
    """A view wrapper for ``-f text``: the answer shown verbatim (a fenced block) wherever it
    is rendered as HTML (the widget, the final output in a kernel); a terminal shows it as it
    is."""

    FENCE = "~~~~~~~~"  # longer than any fence a model writes, so the answer cannot close it

    def __init__(self, view: AnswerView) -> None:
        from holynb.notebook.display import StreamView

        self._view = view
        self._fenced = isinstance(view, StreamView) or bool(getattr(view, "_in_kernel", False))

    def show(self) -> None:
        self._view.show()
        if self._fenced:
            self._view.append(self.FENCE + "text\n")

    def _wrap(self, result: ChatResult) -> ChatResult:
        from dataclasses import replace

        if not self._fenced:
            return result
        return replace(result, text=f"{self.FENCE}text\n{result.text}\n{self.FENCE}")

    def finish(self, result: ChatResult) -> None:
        self._view.finish(self._wrap(result))

    def interrupted(self, result: ChatResult | None = None) -> None:
        self._view.interrupted(None if result is None else self._wrap(result))

    def append(self, text: str) -> None:
        self._view.append(text)

    def set_stop(self, callback: Callable[[], Any]) -> None:
        self._view.set_stop(callback)

    def fail(self, error: BaseException) -> None:
        self._view.fail(error)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._view, name)


def _key_state(session: Session) -> str:
    from holynb._config import offline_server_token

    key = session.settings.api_key
    token = offline_server_token(session.base_url)
    if token is not None and (key is None or key.get() == token.get()):
        return "not needed (holynb's local server)"  # its token is sent by itself
    return f"set ({key.masked})" if key else "missing (set HOLYSHEEP_API_KEY)"


def _short(error: HolynbError) -> str:
    """An error as one printed line plus the magic's hint (see ``holynb.notebook.magic_errors``)."""
    shown = for_magic(error)
    hint = getattr(shown, "hint", None)
    message = str(getattr(shown, "message", error))
    return f"{message}\nHint: {hint}" if hint else message


def _cheaper_paths(args: Any) -> dict[str, Any]:
    """``--service-tier`` and ``--prompt-cache`` as call arguments (only those given)."""
    out: dict[str, Any] = {}
    if args.service_tier:
        out["service_tier"] = _unquote(args.service_tier)
    if args.prompt_cache:
        out["prompt_cache"] = args.prompt_cache
    return out


def _cache_choice(args: Any) -> CallCache:
    """The ``cache=`` of every call a cell makes: False for ``--no-cache`` (neither read nor
    stored), "refresh" for ``--refresh`` (asked again, then stored), None otherwise."""
    return False if args.no_cache else "refresh" if args.refresh else None


def _unquote(value: str | None) -> str | None:
    if value and len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


def _content_text(content: Any) -> str:
    """A message's content as text: its text blocks, and ``[image]`` for each image block."""
    if not isinstance(content, list):
        return str(content)
    parts = []
    for block in content:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            parts.append(str(block.get("text", "")))
        else:
            parts.append("[image]" if kind in ("image_url", "image") else f"[{kind or 'block'}]")
    return " ".join(parts)


def _preview(text: str, width: int = 100) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


_LINE_MAGIC = re.compile(r"^(?P<indent>[ \t]*)%llm(?:[ \t]+(?P<rest>.*?))?[ \t]*$")


def keep_question_marks(lines: list[str]) -> list[str]:
    """An input transformer: ``%llm What is a p-value?`` stays a prompt for the line magic
    instead of IPython's help syntax (``value?``). Lines ending in ``?`` that start with
    ``%llm`` become the call IPython would make; ``%llm?`` / ``%llm??`` (help on the magic) and
    ``%%`` cells are left alone."""
    if not lines or lines[0].lstrip().startswith("%%"):
        return lines
    out = []
    for line in lines:
        body = line.rstrip("\n")
        found = _LINE_MAGIC.match(body) if body.rstrip().endswith("?") else None
        rest = found["rest"] if found else None
        if found and rest and rest.strip("? \t"):
            newline = line[len(body) :]
            out.append(f"{found['indent']}get_ipython().run_line_magic('llm', {rest!r}){newline}")
        else:
            out.append(line)
    return out


def register(shell: Any) -> None:
    """Register the magics with an IPython shell (what ``%load_ext holynb`` calls), and the
    input transformer that keeps a trailing ``?`` in ``%llm`` prompts."""
    shell.register_magics(LLMMagics)
    transforms = getattr(shell, "input_transformers_cleanup", None)
    if transforms is not None and keep_question_marks not in transforms:
        transforms.append(keep_question_marks)  # runs before IPython's help syntax


__all__ = [
    "LLMMagics",
    "PromptError",
    "build_prompt",
    "get_default_session",
    "set_default_session",
]
