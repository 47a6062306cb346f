"""Small runnable apps showing fastq in web frameworks; each is tested under tests/integration."""
