"""Test support for fastq and for third-party brokers, backends and pools."""
