"""An installed app of the test project whose ``tasks`` module fastq should discover."""
