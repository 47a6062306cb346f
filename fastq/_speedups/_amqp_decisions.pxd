# The compiled build of fastq/brokers/_amqp_decisions.py (setup.py compiles that file
# again under this name): ConfirmTracker as a cdef class, so that _amqp.pyx calls its
# methods as C functions (cimport) instead of through Python calls, which cost more than
# the bookkeeping itself on every publish. The py-amqp driver uses the same source
# interpreted. Declares only the names of the .py, with C types; keep them in step.

cimport cython


# final: no Python subclass can override a method, so calls skip that check
@cython.final
cdef class ConfirmTracker:
    # confirm.select went through on the current channel: publishes are numbered
    cdef public bint selected
    # the number of the last publish on this channel (RabbitMQ counts from 1)
    cdef Py_ssize_t _published
    # the first number not answered yet, and the numbers after it answered already
    cdef Py_ssize_t _first
    cdef set _ahead
    # publishes nacked, and mandatory ones returned, since failure() last reported
    cdef Py_ssize_t _nacked
    cdef list _returned

    cpdef select(self)
    cpdef new_channel(self)
    cpdef _restart(self)
    cpdef new_connection(self)
    cpdef published(self, Py_ssize_t count=*)
    cpdef acked(self, object tag, bint multiple)
    cpdef nacked(self, object tag, bint multiple)
    cpdef returned(self, object reply_code, object reply_text)
    @cython.locals(first=Py_ssize_t, answered=Py_ssize_t, ahead=set)
    cdef Py_ssize_t _answer(self, object tag, bint multiple) except -1
    cpdef object timed_out(self, object server, object timeout)
    cpdef object failure(self)
