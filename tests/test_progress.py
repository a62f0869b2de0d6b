"""Progress where the output is a log: whole lines with counts and an ETA, no carriage returns."""

import io

from gammaface.common.progress import progress


def test_a_log_gets_one_plain_line_per_refresh_with_an_eta():
    out = io.StringIO()  # not a terminal, as a pod log or a redirected file
    with progress(40, "rendered", unit="img", file=out, interval=0) as bar:
        for _ in range(4):
            bar.update(10)
    text = out.getvalue()
    assert "\r" not in text and "\x1b" not in text
    lines = text.splitlines()
    assert len(lines) >= 2 and all(line.startswith("  rendered") for line in lines)
    assert "40/40" in lines[-1]
    assert any("<" in line for line in lines[:-1])  # elapsed<remaining: the ETA


def test_a_long_loop_in_a_log_prints_at_the_interval_not_per_step():
    out = io.StringIO()
    with progress(10_000, "DDPM steps", unit="step", file=out) as bar:
        for _ in range(10_000):
            bar.update(1)
    assert len(out.getvalue().splitlines()) <= 3  # the first, perhaps one more, and the last


def test_a_disabled_bar_prints_nothing():
    out = io.StringIO()
    with progress(5, "x", file=out, disable=True) as bar:
        bar.update(5)
    assert out.getvalue() == ""
