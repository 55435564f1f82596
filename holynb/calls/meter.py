"""The meter: every call's money, from its worst case before sending to its ledger row after.

One ``Meter`` per session holds the prices, the budget, the ledger and the ledger log. Every
path that can spend goes through it: ``reserve`` (one call's worst case, refused when it does
not fit or cannot be bounded), ``hold_batch`` (a batch job's parts, checked together with
nothing sent), ``record`` / ``record_failure`` / ``record_batch`` (the real cost, settling the
hold). ``areserve`` / ``arecord`` are the same for an event loop (the Caller's): with a team
database the loop serves other calls while the database answers. The worst case itself is
``holynb.worst_case``; the budget's bookkeeping is ``holynb.budget``.

>>> meter = Meter(PriceTable.default(url, None), "openai")
>>> hold = meter.reserve(body)            # None without a budget
>>> result = meter.record(result, body, kind="chat", tag=None, hold=hold)
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import warnings
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any, TypeGuard

from holynb.budget import Budget, BudgetOvershootWarning
from holynb.errors import (
    APIError,
    BudgetExceededError,
    ConfigurationError,
    HolynbWarning,
    StoreError,
)
from holynb.ledger import CallRecord, Ledger
from holynb.prompt_cache import ttl_of
from holynb.results import ChatResult, CostEstimate, Usage
from holynb.worst_case import UnboundedCall, WorstCase, prompt_estimate

if TYPE_CHECKING:
    from holynb.prices import PriceTable
    from holynb.store import LedgerLog
    from holynb.team.budgets import TeamBudget
    from holynb.team.ledger import TeamLog

__all__ = ["LogWriteWarning", "Meter"]


class LogWriteWarning(HolynbWarning):
    """The ledger log could not be written; calls are kept in ``session.ledger`` only."""


class Meter:
    """Prices, budget, ledger and log of one session (and of sessions derived from it)."""

    def __init__(
        self,
        prices: PriceTable,
        api: str,
        *,
        ledger: Ledger | None = None,
        store: LedgerLog | None = None,
    ) -> None:
        self.bounds = WorstCase(prices, api)
        self.api = api
        self.ledger = ledger if ledger is not None else Ledger()
        self.store = store
        self.budget: Budget | None = None
        self.team_budget: TeamBudget | None = None  # a named budget in the team database
        self._team_holds: dict[int, int] = {}  # a call's hold -> its hold on team_budget
        # a batch part's hold -> the named budget its team hold is on; its key -> that hold
        self._batch_budgets: dict[int, str] = {}
        self._batch_tokens: dict[str, int] = {}
        self._next_token = -(2**62)  # a call's hold when only team_budget holds it
        # The most recently finished call (with concurrent calls, whichever ended last).
        self.last_result: ChatResult | None = None
        self._log_warned = False

    @classmethod
    def open(
        cls,
        prices: PriceTable,
        api: str,
        *,
        log_path: str | os.PathLike[str] | None = None,
        budget_usd: float | None = None,
        database: str | None = None,
        user: str | None = None,
        budget: str | None = None,
    ) -> Meter:
        """A meter with its log (``log_path``, else ``HOLYNB_LOG_PATH``; ``""``: none), the
        calls already in it, and a budget over them. With a ``database`` (a PostgreSQL URL:
        ``holynb.team``) the log is there instead, charged to ``user``, and ``budget`` names
        a budget of the database every call is also held against."""
        meter = cls(prices, api)
        if database != "":
            from holynb.team.database import database_url

            database = database_url(database)
        if database:
            from holynb.team.setup import open_team

            meter.store, meter.team_budget = open_team(database, user=user, budget=budget)
            log_path = ""
        elif budget is not None:
            raise ConfigurationError(
                f"budget={budget!r} names a budget of a team database: give database= "
                "(or HOLYNB_DATABASE_URL) too, or use budget_usd= for this session's own limit."
            )
        if log_path is None and os.environ.get("HOLYNB_LOG_PATH", "").strip():
            from holynb.store import default_log_path

            log_path = default_log_path()
        if log_path:  # sqlite3 and the store load only for a log
            from holynb.store import LedgerStore

            meter.store = LedgerStore(log_path)
            meter.ledger.extend(meter.store.load())  # a restarted kernel picks up
        if budget_usd is not None:
            meter.set_budget(budget_usd)
        return meter

    # -- settings ------------------------------------------------------------------------------

    @property
    def prices(self) -> PriceTable:
        """The prices calls are charged at; settable."""
        return self.bounds.prices

    @prices.setter
    def prices(self, table: PriceTable) -> None:
        self.bounds.prices = table

    @property
    def spent_usd(self) -> float:
        """The sum of the ledger's known costs."""
        return float(sum(r.cost_usd for r in self.ledger if r.cost_usd is not None))

    @property
    def unpriced_calls(self) -> int:
        """Calls that used tokens of a model with no known price (cost None)."""
        ledger = self.ledger
        return sum(
            1 for r in ledger if r.cost_usd is None and (r.prompt_tokens or r.completion_tokens)
        )

    def close(self) -> None:
        """Close the log file, if any (it opens again on the next write)."""
        if self.store is not None:
            self.store.close()

    def carry_over(self, other: Meter, budget_usd: float | None) -> None:
        """Take ``other``'s prices, log and ledger (for a derived session), then a budget of
        ``budget_usd`` over them, so that past spending counts."""
        self.prices = other.prices
        self.store = other.store
        self.team_budget = other.team_budget
        self.ledger.extend(list(other.ledger))
        self.set_budget(budget_usd)

    def set_budget(self, limit: float | None) -> None:
        """A spending limit in USD over this ledger (None: none). With a log, the budget's
        holds live in the file, so kernels sharing it hold one budget."""
        if limit is None:
            self.budget = None
            return
        store: Any = self.store  # a LedgerStore's holds are shared (holynb.budget.SharedHolds)
        shared = store if store is not None and store.shares_holds else None
        self.budget = Budget(
            limit, spent_usd=self.spent_usd, shared=shared, on_others=self.ledger.extend
        )

    # -- before sending ------------------------------------------------------------------------

    def prompt_tokens(self, messages: list[dict[str, Any]]) -> int:
        """The offline prompt estimate, its images counted by this wire format's rule."""
        return prompt_estimate(messages, self.api)

    def estimate(
        self,
        messages: list[dict[str, Any]],
        model: str,
        max_tokens: int | None,
        params: dict[str, Any],
        image_tokens: int = 0,
    ) -> CostEstimate:
        """What a call would cost, from an offline token estimate: the messages counted by
        holynb's tokenizer heuristic plus ``image_tokens``, the answer as ``max_tokens`` for
        every answer asked for (``n=``)."""
        from holynb.tokens import estimate_messages_tokens
        from holynb.worst_case import answers_asked

        prompt_tokens = estimate_messages_tokens(messages) + image_tokens
        out = (max_tokens or 0) * answers_asked(params)
        usage = Usage(prompt_tokens=prompt_tokens, completion_tokens=out, estimated=True)
        return CostEstimate(
            model=model,
            prompt_tokens=prompt_tokens,
            max_completion_tokens=max_tokens,
            cost_usd=self.prices.cost(model, usage),
            image_tokens=image_tokens,
        )

    def running_cost(
        self, model: str, messages: list[dict[str, Any]]
    ) -> Callable[[int], float | None]:
        """The cost of ``model``'s answer so far by its completion tokens, the prompt counted
        offline once: what a live figures line shows while the answer streams (None: no
        price; no warning: the call's own price, once it has used something, warns)."""
        prompt = self.prompt_tokens(messages)
        prices = self.prices

        def cost(completion_tokens: int) -> float | None:
            usage = Usage(prompt_tokens=prompt, completion_tokens=completion_tokens)
            return prices.cost(model, usage, warn=False)

        return cost

    def reserve(self, body: dict[str, Any]) -> int | None:
        """Hold the call's worst-case cost against the budget and the named budget (None:
        neither); refuse a call whose worst case is unknown (no price, no bound on the answer)
        or does not fit either of them."""
        hold, worst = self._hold_own(body)
        team = self.team_budget
        if team is None or worst is None:
            return hold
        try:
            team_hold = team.reserve(worst)
        except BaseException as err:
            raise self._unhold(hold, err) from None
        return self._with_team_hold(hold, team_hold)

    async def areserve(self, body: dict[str, Any]) -> int | None:
        """``reserve`` for an event loop: the named budget's statement runs while the loop
        serves other calls (with several in flight, their reservations go together)."""
        hold, worst = self._hold_own(body)
        team = self.team_budget
        if team is None or worst is None:
            return hold
        try:
            team_hold = await team.areserve(worst)  # if it lands after a cancel, it ends
        except asyncio.CancelledError:
            self.release(hold)
            raise
        except BaseException as err:
            raise self._unhold(hold, err) from None
        return self._with_team_hold(hold, team_hold)

    def _hold_own(self, body: dict[str, Any]) -> tuple[int | None, float | None]:
        # The session's own hold, and the worst case the named budget is to hold (None: no
        # named budget, or nothing to hold).
        budget, team = self.budget, self.team_budget
        check = getattr(self.store, "check_writable", None)
        if check is not None:  # a team database that lost a record: send nothing more
            try:
                check()
            except StoreError as err:
                raise _refusal(budget, f"{err} This call was not sent.") from None
        if budget is None and team is None:
            return None, None
        try:
            worst = self.bounds.usd(body)
        except UnboundedCall as err:
            raise _refusal(budget, str(err)) from None
        hold = self._reserve_own(budget, worst) if budget is not None else None
        return hold, (worst if team is not None else None)

    def _unhold(self, hold: int | None, err: BaseException) -> BaseException:
        # The named budget refused or could not answer: the own hold ends; what to raise.
        self.release(hold)
        if isinstance(err, StoreError):  # the database is away: nothing unrecorded is sent
            return _refusal(None, f"{err} This call was not sent.")
        return err

    def _with_team_hold(self, hold: int | None, team_hold: int) -> int:
        if hold is None:
            self._next_token -= 1
            hold = self._next_token
        self._team_holds[hold] = team_hold
        return hold

    def _reserve_own(self, budget: Budget, worst: float) -> int:
        if budget.shared is None:
            return budget.reserve(worst)
        import sqlite3  # loaded with the store already

        try:
            return budget.reserve(worst)
        except sqlite3.OperationalError as err:
            if "locked" not in str(err) and "busy" not in str(err):
                raise _refusal(budget, _unreadable(err)) from None
            self.warn_log(err)  # another process holds the log's write lock for now
            return budget.reserve(worst, here_only=True)
        except sqlite3.Error as err:
            raise _refusal(budget, _unreadable(err)) from None

    def hold_batch(
        self, parts: list[list[dict[str, Any]]], owner: str
    ) -> list[tuple[int | None, float]]:
        """Reserve each part's worst case at batch prices, all together or none, against the
        budget and the named budget (the same refusals as ``reserve``); ``[(hold, usd)]`` per
        part, holds None without either. ``owner`` (``job:<id>``) keeps the holds in a shared
        log, and on the named budget, until the parts' results are recorded, whatever
        becomes of this process (``team_hold_of`` gives a part's hold there)."""
        budget, team = self.budget, self.team_budget
        if budget is None and team is None:
            return [(None, 0.0)] * len(parts)
        try:
            worst = [sum(self.bounds.usd(b, batch=True) for b in bodies) for bodies in parts]
        except UnboundedCall as err:
            raise _refusal(budget, str(err)) from None
        tokens: list[int | None] = [None] * len(worst)
        if budget is not None:
            tokens = list(budget.reserve_all(worst, owner=owner))
        if team is None:
            return list(zip(tokens, worst, strict=True))
        try:
            team_holds = team.reserve_all(worst, owner=owner)
        except BaseException as err:
            for token in tokens:
                self.release(token)
            if isinstance(err, StoreError):  # the database is away: nothing is uploaded
                raise _refusal(None, f"{err} Nothing was uploaded.") from None
            raise
        held: list[tuple[int | None, float]] = []
        for token, team_hold, usd in zip(tokens, team_holds, worst, strict=True):
            if token is None:
                self._next_token -= 1
                token = self._next_token
            self._team_holds[token] = team_hold
            self._batch_budgets[token] = team.name
            held.append((token, usd))
        return held

    def team_hold_of(self, hold: int | None) -> int | None:
        """The named budget's hold behind ``hold`` (a batch part keeps it in its manifest)."""
        return self._team_holds.get(hold) if hold is not None else None

    def adopt_batch_hold(
        self,
        key: str,
        usd: float,
        hold: int | None,
        *,
        team_hold: int | None = None,
        budget: str | None = None,
    ) -> int | None:
        """Hold again a batch part's worst case reserved by an earlier session (see
        ``Budget.adopt``), and take over its ``team_hold`` on the named budget ``budget``
        (it stays in the database: this session settles or releases it, whatever budget it
        names itself); idempotent per ``key``, None without either."""
        token = None
        if self.budget is not None and usd > 0:
            token = self.budget.adopt(key, usd, hold)
        if team_hold is None or budget is None:
            return token
        if token is None:
            mine = hold is not None and self._team_holds.get(hold) == team_hold
            token = hold if mine else self._batch_tokens.get(key)
        if token is None:
            self._next_token -= 1
            token = self._next_token
        self._batch_tokens[key] = token
        self._team_holds[token] = team_hold
        self._batch_budgets[token] = budget
        return token

    def end_stray_batch_holds(self, owner: str, keep: set[int]) -> None:
        """End the named budget's holds of a batch job (``owner``: ``job:<id>``) that none of
        its unrecorded parts ``keep`` (call with the job's lock held: its holds are then only
        those of its parts); nothing without a team database."""
        end = getattr(self.store, "end_holds", None)
        if end is not None:
            with contextlib.suppress(StoreError):  # tried again at the next refresh
                end(owner, keep)

    def release(self, hold: int | None) -> None:
        """End a hold without a cost (a no-op once the call was settled)."""
        if hold is None:
            return
        team_hold = self._team_holds.pop(hold, None)
        named = self._batch_budgets.pop(hold, None)
        with contextlib.suppress(StoreError):  # else its lease ends it
            if team_hold is not None and named is not None and self.store is not None:
                self.store.extend([], release=team_hold, budget=named)  # a batch part's
            elif team_hold is not None and self.team_budget is not None:
                self.team_budget.release(team_hold)
        if self.budget is not None:
            self.budget.settle(hold, None)

    # -- after the answer ----------------------------------------------------------------------

    def price(self, result: ChatResult, body: dict[str, Any], batch: bool = False) -> ChatResult:
        """``result`` with its cost; usage the server did not send is counted offline (and
        marked estimated), the answer capped at the request's limit."""
        usage = result.usage
        if usage.estimated:
            from holynb.tokens import estimate_tokens

            completion = usage.completion_tokens or estimate_tokens(result.text)
            limit = body.get("max_tokens") or body.get("max_completion_tokens")
            if isinstance(limit, int) and limit > 0:
                completion = min(completion, limit)  # the server stops there
            usage = replace(
                usage,
                prompt_tokens=usage.prompt_tokens or self.prompt_tokens(body["messages"]),
                completion_tokens=completion,
            )
            result = replace(result, usage=usage)
        if self.api == "anthropic" and usage.cache_ttl is None:
            ttl = ttl_of(body)  # the prompt cache asked for prices the answer's cache writes
            if ttl is not None:
                usage = replace(usage, cache_ttl=ttl)
                result = replace(result, usage=usage)
        return result.with_cost(self.prices.cost(result.model, usage, batch=batch))

    def record(
        self,
        result: ChatResult,
        body: dict[str, Any],
        *,
        kind: str,
        tag: str | None,
        hold: int | None,
        batch: bool = False,
    ) -> ChatResult:
        """Price an answered call, record it and settle its hold; the priced result."""
        result, record = self._priced(result, body, kind, tag, batch)
        self.append(record, hold, asked=body["model"])
        return result

    async def arecord(
        self,
        result: ChatResult,
        body: dict[str, Any],
        *,
        kind: str,
        tag: str | None,
        hold: int | None,
        batch: bool = False,
    ) -> ChatResult:
        """``record`` for an event loop: it returns once the row is written, and the loop
        serves other calls while a team database writes it."""
        result, record = self._priced(result, body, kind, tag, batch)
        await self.aappend(record, hold, asked=body["model"])
        return result

    def _priced(
        self, result: ChatResult, body: dict[str, Any], kind: str, tag: str | None, batch: bool
    ) -> tuple[ChatResult, CallRecord]:
        result = self.price(result, body, batch)
        self.learn_answering_model(body["model"], result.model)
        self.last_result = result
        return result, CallRecord.from_result(result, kind=kind, tag=tag)

    def record_failure(
        self,
        body: dict[str, Any],
        *,
        kind: str,
        tag: str | None,
        hold: int | None,
        err: APIError | None,
        partial: ChatResult | None,
        interrupted: bool = False,
    ) -> None:
        """Record a call that failed or was interrupted; what arrived of it is paid for (and
        becomes ``err.partial``, priced)."""
        if err is not None:
            error = f"{type(err).__name__}: {err.message}"
        else:
            error = "Interrupted: the call was cancelled before an answer arrived"
        if partial is not None:
            result = self.price(partial, body)
            self.last_result = result
            if err is not None:
                err.partial = result
        else:
            result = ChatResult(
                text="",
                model=body["model"],
                usage=Usage(),
                attempts=err.attempts if err is not None else 1,
                request_id=err.request_id if err is not None else None,
                interrupted=interrupted,
                cost_usd=0.0,
            )
        record = CallRecord.from_result(result, kind=kind, tag=tag, error=error)
        self.append(record, hold, asked=body["model"])

    def record_hit(self, hit: ChatResult, *, kind: str, tag: str | None) -> ChatResult:
        """Record an answer served from the cache (free)."""
        self.append(CallRecord.from_result(hit, kind=kind, tag=tag), None)
        self.last_result = hit
        return hit

    def append(self, record: CallRecord, hold: int | None, *, asked: str | None = None) -> None:
        """Record one call: the ledger, the log (ending its budget hold in the same write when
        the budget is shared through it) and the budget. ``asked`` is the model the call asked
        for, to say why a call cost more than its hold."""
        team, team_hold = self._append(record, hold, asked)
        if team is not None:
            try:
                team.append(record, release=team_hold)
            except StoreError as err:
                self.warn_log(err)

    async def aappend(
        self, record: CallRecord, hold: int | None, *, asked: str | None = None
    ) -> None:
        """``append`` for an event loop: a team database's row is awaited, not waited for (a
        cancelled caller leaves it to be written all the same)."""
        team, team_hold = self._append(record, hold, asked)
        if team is not None:
            try:
                await team.aappend(record, release=team_hold)
            except StoreError as err:
                self.warn_log(err)

    def _append(
        self, record: CallRecord, hold: int | None, asked: str | None
    ) -> tuple[TeamLog | None, int | None]:
        # Everything but a team database's row: its log and the hold its row ends, to write.
        self.ledger.append(record)
        budget = self.budget
        released = False
        team_hold = self._team_holds.pop(hold, None) if hold is not None else None
        store = self.store
        team: TeamLog | None = None
        if store is not None:
            if _is_team_log(store):  # a named budget's hold ends with the row
                team = store
            else:
                import sqlite3  # loaded with the store already

                shared = budget is not None and _same(budget.shared, store) and hold is not None
                try:
                    store.append(record, release=hold if shared else None)
                    released = shared
                except (sqlite3.Error, StoreError) as err:  # locked, disk full, damaged, ...
                    self.warn_log(err)
        if budget is not None and hold is not None:
            budget.settle(hold, record.cost_usd, reason=_overshoot_reason(asked, record.model),
                          released=released)  # fmt: skip
        return team, team_hold

    def record_batch(
        self,
        records: list[CallRecord],
        hold: int | None,
        *,
        budget: str | None = None,
        once: str | None = None,
    ) -> None:
        """Record one batch part's calls at once and settle its hold to their real cost; a
        job on the named budget ``budget`` is charged there, its hold on it ended, in the
        same transaction as its rows. ``once`` (the part's key): a store that remembers it
        writes nothing for a part recorded already, and the hold ends without a cost. A job
        kept in the team database raises ``StoreError`` when its rows cannot be written there
        (nothing is recorded; the next follow records them); a file's is warned about."""
        team_hold = self._team_holds.pop(hold, None) if hold is not None else None
        if hold is not None:
            self._batch_budgets.pop(hold, None)
        own = self.budget
        shared = own is not None and _same(own.shared, self.store) and hold is not None
        released = written = False
        if self.store is not None:
            import sqlite3  # loaded with the store already

            try:
                if budget is not None:
                    written = self.store.extend(
                        records, release=team_hold, budget=budget, once=once
                    )
                else:  # a job on no named budget is charged to none, whoever records it
                    ends = hold if shared and hold is not None and hold > 0 else None
                    written = self.store.extend(records, release=ends, budget="", once=once)
                    released = shared
                if not written:  # recorded already, by a process that lost its manifest save
                    records = []
            except (sqlite3.Error, StoreError) as err:
                if isinstance(err, StoreError) and self.store.job_store() is not None:
                    raise  # the job lives in that database: the part stays unrecorded there,
                    # its holds are adopted again and it is recorded by the next follow
                self.warn_log(err)
        self.ledger.extend(records)
        if own is None:
            return
        cost = sum(max(r.cost_usd or 0.0, 0.0) for r in records)
        own.settle(hold, cost, released=released)

    def learn_answering_model(self, asked: str, answered: str) -> None:
        """Remember an endpoint answering ``asked`` with a pricier model: from then on its
        price bounds ``asked``'s calls too (said once, when a budget is set)."""
        if self.bounds.learn(asked, answered) and self.budget is not None:
            warnings.warn(
                f"holynb: {asked!r} was asked, and the endpoint answered with {answered!r}, "
                f"which costs more; the budget now reserves {asked!r}'s calls at "
                f"{answered!r}'s price.",
                BudgetOvershootWarning,
                stacklevel=6,
            )

    def warn_log(self, err: Exception, action: str = "write") -> None:
        """Say once that the log could not be written (or read)."""
        if self._log_warned:
            return
        self._log_warned = True
        what = "this call is" if action == "write" else "calls are"
        warnings.warn(
            f"holynb could not {action} the ledger log ({err}); {what} kept in session.ledger "
            "only. This warning is shown once.",
            LogWriteWarning,
            stacklevel=5,
        )


def _is_team_log(store: object) -> TypeGuard[TeamLog]:
    return hasattr(store, "aappend")  # holynb.team.ledger.TeamLog (not imported without one)


def _same(a: object, b: object) -> bool:
    return a is b


def _refusal(budget: Budget | None, message: str) -> BudgetExceededError:
    if budget is None:
        return BudgetExceededError(message)
    return BudgetExceededError(message, spent_usd=budget.spent_usd, limit_usd=budget.limit_usd)


def _unreadable(err: Exception) -> str:
    return (
        f"holynb could not read the budget shared through the ledger log ({err}), so this "
        "call was not sent. Try again, or give this session its own log_path."
    )


def _overshoot_reason(asked: str | None, answered: str) -> str:
    """Why a call may have cost more than the worst case reserved for it."""
    if asked is not None and answered and answered != asked:
        return f"{asked!r} was asked, and the endpoint answered with {answered!r}."
    return "The endpoint reported more tokens than the call's limits allow."
