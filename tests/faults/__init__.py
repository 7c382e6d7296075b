"""Reliability suite: injected faults and bad input, each checked against an oracle and for leftovers."""
