"""The money figures of a batch job's wait() bar (holynb.batch.spend)."""

from __future__ import annotations

from holynb.batch.spend import Spend


def test_before_any_part_ended_the_bar_shows_the_most_the_job_can_cost() -> None:
    assert Spend([0.01, 0.02, 0.03]).postfix(running=[0, 1, 2]) == "at most $0.0600"


def test_mid_job_the_bar_shows_cost_so_far_projection_and_the_most() -> None:
    spend = Spend([0.01, 0.02, 0.03, 0.04], costs={0: 0.002, 1: 0.004})
    assert spend.postfix(running=[2, 3]) == "cost=$0.0060 projected=$0.0120 at most $0.0760"


def test_failed_rows_cost_nothing_and_do_not_lower_the_projection() -> None:
    spend = Spend([0.01, 0.01, 0.01], costs={0: 0.004, 1: 0.0})
    assert spend.postfix(running=[2]) == "cost=$0.0040 projected=$0.0080 at most $0.0140"


def test_when_every_part_ended_only_the_cost_is_shown() -> None:
    assert Spend([0.01, 0.01], costs={0: 0.001, 1: 0.002}).postfix(running=[]) == "cost=$0.0030"


def test_an_unpriced_row_makes_the_figure_unknown_never_zero() -> None:
    assert Spend(None).postfix(running=[0]) == "cost unknown"
    assert Spend([0.01, 0.01], costs={0: None}).postfix(running=[1]) == "cost unknown"
