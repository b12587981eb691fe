"""Progress bars for long work: tqdm on stderr with rate and ETA, off when the ``safemix`` logger is quiet."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm


@contextmanager
def progress_bar(total: int, desc: str, unit: str) -> Iterator[tqdm]:
    """A progress bar over ``total`` items of ``unit`` (it shows items/s and the ETA), as a context manager.

    The bar is disabled when the ``safemix`` logger does not show INFO, so ``safemix --quiet`` (or a command's
    ``--quiet``) leaves only warnings and errors on stderr, which suits logs. While the bar is shown, log
    records are printed above it instead of breaking it.
    """
    quiet = not logging.getLogger("safemix").isEnabledFor(logging.INFO)
    with logging_redirect_tqdm(loggers=[logging.getLogger()]), tqdm(
        total=total, desc=desc, unit=unit, file=sys.stderr, disable=quiet, dynamic_ncols=True, smoothing=0.1
    ) as bar:
        yield bar
