"""The tests' own set-up: what the conftests scrub from the environment."""

from __future__ import annotations

import os

from tests.helpers import without_holynb_settings


def test_every_holynb_setting_is_scrubbed_including_the_display_mode():
    env = {
        "HOLYNB_DISPLAY": "widget",
        "HOLYNB_API_KEY": "sk-real",
        "HOLYSHEEP_API_KEY": "sk-real",
        "HOLYNB_SOMETHING_NEW": "x",
        "HOLYNB_TEKKEN_JSON": "/tmp/tekken.json",  # a test setting, kept
        "PATH": "/usr/bin",
    }
    assert without_holynb_settings(env) == {
        "HOLYNB_TEKKEN_JSON": "/tmp/tekken.json",
        "PATH": "/usr/bin",
    }


def test_this_run_sees_no_holynb_setting():
    assert os.environ.keys() == without_holynb_settings(os.environ).keys()


def test_child_processes_get_no_holynb_setting():
    from tests.helpers import CHILD_ENV

    assert CHILD_ENV.keys() - {"PYTHONPATH"} == without_holynb_settings(CHILD_ENV).keys() - {
        "PYTHONPATH"
    }
