"""Import NumPy so that the threads its BLAS starts never take Ctrl-C or SIGTERM (called where nncompile is the first
to import NumPy: the ONNX exporter, and load() before it runs a generated module; compiling needs no NumPy).

A process-directed signal goes to any thread that does not block it. Delivered to a BLAS worker, Python only notes
it, and a main thread blocked in a read (of a FIFO, say) never wakes up to raise KeyboardInterrupt. Threads inherit
the signal mask of the thread that starts them, so blocking the two signals while NumPy loads keeps them for the
main thread.
"""

from __future__ import annotations

import signal


def import_numpy_with_signals_for_the_main_thread() -> None:
    if not hasattr(signal, "pthread_sigmask"):  # not POSIX: nothing to do
        import numpy

        return
    held = {signal.SIGINT, signal.SIGTERM}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        import numpy  # noqa: F401
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
