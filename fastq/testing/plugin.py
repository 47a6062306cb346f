"""pytest plugin: fixtures for testing fastq apps."""
