# cython: language_level=3
"""The compiled consumer: fastq/worker/_consumer_py.py's Consumer on the compiled builds of
its loop and of its ack decisions.

setup.py compiles fastq/worker/_consumer_loop.py and fastq/worker/_ack_decisions.py a second
time, as fastq._speedups._consumer_loop and fastq._speedups._ack_decisions (one file, two
builds); this class puts them where the pure-Python consumer has their interpreted builds,
so both consumers run the same lines.

What is compiled is what measured faster (callgrind: instructions per no-op task, a solo
worker draining RabbitMQ, CPython 3.11): the loop every delivery passes through and the
settling of each completion. The per-delivery vetting (Consumer._prepare) stays
interpreted: compiled along with the rest of _consumer_py.py, it cost 1.9k instructions
more per task (77.7k against 75.8k), Cython reading attributes through PyObject_GetAttr
where the interpreter's specialised loads hit their inline caches (measured at 454c99b).
This file is a .pyx, not a .py, so that fastq._speedups._consumer exists only where the C
build does.
"""

from fastq._speedups._ack_decisions import AckBatch
from fastq._speedups._consumer_loop import ConsumerLoop
from fastq.worker import _consumer_py


class Consumer(ConsumerLoop, _consumer_py.Consumer):
    """``fastq.worker._consumer_py.Consumer`` with the compiled loop and ``AckBatch``."""

    ack_batch_type = AckBatch
