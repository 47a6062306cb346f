"""A Django app with one fastq task and the views that send it and read its result."""
