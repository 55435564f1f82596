"""Notebook tests run offline on the local server: no real key or endpoint leaks in."""

import os

for _name in (
    "HOLYSHEEP_API_KEY",
    "HOLYNB_API_KEY",
    "HOLYNB_BASE_URL",
    "HOLYNB_MODEL",
    "HOLYNB_LOG_PATH",
):
    os.environ.pop(_name, None)
