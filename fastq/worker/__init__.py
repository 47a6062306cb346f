"""The worker: consumer loop, executor, pools and the supervising process."""
