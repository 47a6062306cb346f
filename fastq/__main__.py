"""``python -m fastq``: the fastq command, patched first for a gevent/eventlet worker."""

from fastq._green import patch_for_command_line

patch_for_command_line()

from fastq.cli import main  # noqa: E402 - after the patch, on purpose

if __name__ == "__main__":
    main()
