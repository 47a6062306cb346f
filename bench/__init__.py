"""Benchmarks: programs comparing fastq with Celery and bare clients on the same broker."""
