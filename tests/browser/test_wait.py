"""The browser tests' ``wait``: a page being replaced under it means "look again", anything else fails.

No browser here: ``wait`` hands its predicate whatever driver it is given, so these tests give it none
and raise what chromedriver raises. They pin the CI failure of test_tick_and_cancel_then_the_grid_and_
the_phone: a form posted, the test found ``main`` in the old document, and by the time it read its text
Chromium had swapped the document in, so chromedriver answered "Node with given id does not belong to
the document" (a plain WebDriverException, not a StaleElementReferenceException).
"""
from __future__ import annotations

import pytest

from test_browser import wait

SWAPPED = ('unknown error: unhandled inspector error: {"code":-32000,'
           '"message":"Node with given id does not belong to the document"}')


def flaky(error: Exception, times: int = 1):
    """A predicate that raises ``error`` ``times`` times, then holds."""
    calls = []

    def predicate(driver):
        calls.append(driver)
        if len(calls) <= times:
            raise error
        return "held"
    return predicate, calls


@pytest.mark.parametrize("message", [
    SWAPPED,
    'unknown error: unhandled inspector error: {"code":-32000,"message":"No node with given id found"}',
    "javascript error: Execution context was destroyed, most likely because of a navigation",
], ids=["node-of-another-document", "node-gone", "script-context-gone"])
def test_a_document_swapped_under_the_predicate_is_looked_at_again(message):
    from selenium.common.exceptions import WebDriverException
    predicate, calls = flaky(WebDriverException(message), times=2)
    assert wait(None, predicate, 5, "the report") == "held"
    assert len(calls) == 3


def test_any_other_browser_error_fails_at_once():
    from selenium.common.exceptions import WebDriverException
    predicate, calls = flaky(WebDriverException("unknown error: session deleted because of page crash"))
    with pytest.raises(WebDriverException, match="page crash"):
        wait(None, predicate, 5, "the report")
    assert len(calls) == 1


def test_a_condition_never_met_times_out_saying_what_was_awaited():
    from selenium.common.exceptions import TimeoutException
    with pytest.raises(TimeoutException, match="the bulk cancel's report"):
        wait(None, lambda d: False, 0.5, "the bulk cancel's report")
