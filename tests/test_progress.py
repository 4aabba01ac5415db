"""Progress on a terminal: one redrawn line, and messages that print above it rather than on it."""

import io

from trainer.progress import Progress


class Terminal(io.StringIO):
    def isatty(self):
        return True


def screen(text: str) -> list[str]:
    """What a terminal shows for `text`: \\r returns to the line's start, ESC[K clears the rest of it."""
    lines, current = [], ""
    for part in text.replace("\033[K", "\0").split("\n"):
        current = ""
        for piece in part.split("\r"):
            current = piece.replace("\0", "") if "\0" in piece else (piece + current[len(piece):])
        lines.append(current)
    return lines


def test_a_message_prints_above_the_bar_and_survives_its_next_redraw():
    term = Terminal()
    progress = Progress(10, label="train", stream=term)
    say = progress.around(lambda message: term.write(message + "\n"))  # stdout and stderr on one terminal
    progress.last -= 1  # due for a redraw
    progress.update(5)
    assert screen(term.getvalue())[-1].startswith("train  5/10 (50%)")
    say("epoch 1/2  step 5")
    progress.update(5)
    progress.close()
    shown = [line for line in screen(term.getvalue()) if line]
    assert shown[0] == "epoch 1/2  step 5"
    assert shown[-1].startswith("train  10/10 (100%)") and len(shown) == 2


def test_off_a_terminal_messages_and_lines_just_alternate():
    log = io.StringIO()
    progress = Progress(2, label="x", stream=log)
    said = []
    progress.around(said.append)("hello")
    progress.update(2)
    progress.close()
    progress.close()  # a second close adds nothing
    assert said == ["hello"] and log.getvalue().startswith("x  2/2 (100%)") and log.getvalue().count("\n") == 1


def test_the_last_line_keeps_the_last_fields():
    # A stop's last line read "train  44/300 (15%)  ETA 2:28", without the losses every line before it had.
    log = io.StringIO()
    progress = Progress(300, label="train", stream=log)
    progress.last -= 20  # due
    progress.update(40, extra=lambda: "d_loss 1.5000")
    progress.update(4, extra=lambda: "d_loss 1.4000")  # not due: the stop comes before the next line
    progress.close()
    assert log.getvalue().splitlines()[-1].startswith("train  44/300 (15%)")
    assert log.getvalue().splitlines()[-1].endswith("d_loss 1.4000")


def test_the_eta_of_compiled_work_leaves_out_the_first_call_which_compiles(monkeypatch):
    # Training's first call compiles (10 s here, minutes on a GPU with XLA), the next take 1 s per 4 steps. The ETA
    # counted the compile as if every call paid it: 1:28 for what takes 22 s, "ETA 1:34" for a 28 s wait in a
    # 40-step `launcher submit`.
    clock = iter([0.0, 10.0, 11.0, 12.0, 12.0])
    monkeypatch.setattr("trainer.progress.time.monotonic", lambda: next(clock))
    log = io.StringIO()
    progress = Progress(100, label="train", stream=log, log_every=0, warmup=True)
    for _ in range(3):
        progress.update(4)
    lines = log.getvalue().splitlines()
    assert lines[0] == "train  4/100 (4%)"  # no rate measured yet: no ETA rather than a wrong one
    assert lines[-1] == "train  12/100 (12%)  ETA 0:22"


def test_a_resumed_downloads_eta_counts_only_this_sessions_rate(monkeypatch):
    # fetch.py resumes a download at the bytes it has (start=have): those came earlier, so they say nothing of
    # this session's rate. Counting them made 900 of 1000 bytes plus 10 in a second look like 910 B/s.
    clock = iter([0.0, 1.0])
    monkeypatch.setattr("trainer.progress.time.monotonic", lambda: next(clock))
    log = io.StringIO()
    progress = Progress(1000, label="downloading", stream=log, log_every=0, start=900)
    progress.update(10)
    assert log.getvalue().splitlines() == ["downloading  910/1000 (91%)  ETA 0:09"]


def test_durations_of_an_hour_or_more_show_hours():
    from trainer.progress import format_duration

    assert format_duration(59) == "0:59" and format_duration(3599) == "59:59"
    assert format_duration(3600) == "1:00:00" and format_duration(2 * 3600 + 5 * 60 + 7) == "2:05:07"
    assert format_duration(-3) == "0:00"  # a clock that stepped back is no negative time
