"""Thread counts chosen by `diamond_play.threads` stay chosen, whatever the other threads choose later."""

import threading

import torch

from diamond_play.threads import as_compute_thread, as_helper_thread, compute_threads, use_threads


def test_a_compute_thread_keeps_its_count_when_a_helper_thread_starts_after_it():
    # torch gives a thread the process-wide count at its first parallel op: a player thread that set one thread
    # after the shared engine's thread chose two used to leave the engine computing on one.
    main_threads, chosen_before = torch.get_num_threads(), compute_threads()
    use_threads(2, compute_off_main=True)
    chosen, helper_done, seen = threading.Event(), threading.Event(), {}

    def compute() -> None:
        seen["chosen"] = as_compute_thread()
        chosen.set()
        helper_done.wait(10)
        seen["running"] = torch.get_num_threads()
        x = torch.rand(256, 256)
        (x @ x).sum()
        seen["after_op"] = torch.get_num_threads()

    def helper() -> None:
        chosen.wait(10)
        as_helper_thread()
        torch.rand(64).sum()
        helper_done.set()

    try:
        threads = [threading.Thread(target=compute), threading.Thread(target=helper)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    finally:  # leave the process as the other tests found it
        use_threads(chosen_before)
        torch.set_num_threads(main_threads)
    assert seen == {"chosen": 2, "running": 2, "after_op": 2}
