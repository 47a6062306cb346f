"""Schema migrations of the ``fastq`` Django app (the result table)."""
