import torch

from tunesmith.training import hardware


def test_busy_machine_is_judged_once_per_process(monkeypatch):
    """cv/search/curve train repeatedly: the previous run's own load must not halve the next run's threads."""
    before = torch.get_num_threads()
    monkeypatch.setattr(hardware, "_auto_threads", None)
    monkeypatch.setattr(hardware.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(hardware.os, "getloadavg", lambda: (0.1, 0.1, 0.1))
    assert hardware.configure_threads(None) == (2, None)
    monkeypatch.setattr(hardware.os, "getloadavg", lambda: (2.0, 2.0, 2.0))  # our own previous run
    assert hardware.configure_threads(None) == (2, None)
    monkeypatch.setattr(hardware, "_auto_threads", None)
    threads, warning = hardware.configure_threads(None)
    assert threads == 1 and "busy" in warning
    assert hardware.configure_threads(3) == (3, None), "an explicit --threads always wins"
    torch.set_num_threads(before)
