"""Keeping leases alive: a daemon thread that renews what this process holds."""

from __future__ import annotations

import logging
import threading

from ..exceptions import BrokerError

logger = logging.getLogger("fastq.broker")


class LeaseKeeping:
    """Mixin for brokers whose claimed messages return to the queue unless their holder
    renews them (SQLite and Redis leases, SQS visibility).

    The broker provides ``_lock`` (a threading.Lock), ``_stop`` (a threading.Event),
    ``_keeper`` (None until started), ``extend_leases()`` and ``_lease_period()``; it
    calls ``_ensure_keeper()`` when it first holds something. Setting ``_stop`` ends the
    renewals, as a holder that died would (the tests do exactly that).
    """

    _keeper_name = "fastq-lease-keeper"
    _lock: threading.Lock
    _stop: threading.Event
    _keeper: threading.Thread | None

    def extend_leases(self) -> int:
        raise NotImplementedError

    def _lease_period(self) -> float:
        raise NotImplementedError

    def _ensure_keeper(self) -> None:
        keeper = self._keeper
        if keeper is not None and keeper.is_alive():
            return
        with self._lock:
            if self._keeper is not None and self._keeper.is_alive():
                return
            self._stop.clear()
            self._keeper = threading.Thread(target=self._keep_leases, name=self._keeper_name,
                                            daemon=True)
            self._keeper.start()

    def _stop_keeper(self, timeout: float) -> None:
        """End the renewals; wait up to ``timeout`` s for the keeper (unless it is us)."""
        self._stop.set()
        keeper = self._keeper
        if keeper is not None and keeper is not threading.current_thread():
            keeper.join(timeout)
        self._keeper = None

    def _keep_leases(self) -> None:
        # a third of the period: two renewals may fail before a lease lapses
        interval = self._lease_period() / 3
        try:
            while not self._stop.wait(interval):
                try:
                    self.extend_leases()
                except BrokerError as exc:
                    logger.warning("%r could not renew the leases it holds (%s); retrying "
                                   "in %.1fs", self, exc, interval)
        finally:
            self._keeper_exiting()

    def _keeper_exiting(self) -> None:
        """Release what the keeper thread opened for itself (a connection, say)."""



