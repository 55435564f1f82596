"""The call pipeline's core: what every feature (chat, stream, map, compare, batch, structured
answers, the interpreter, the magics) goes through, so each rule lives once.

- ``meter``: estimate, reserve (refuse before sending), price and record every call.
"""
