# The rabbitmq-c Connection's C-level state; behaviour and docstrings are in _amqp.pyx.

from libc.stdint cimport uint8_t, uint64_t

from fastq._speedups._amqp_decisions cimport ConfirmTracker
from fastq._speedups.includes cimport rabbitmq as rmq


cdef class Connection:
    # settings, as given to __init__ (the same attribute names as the py-amqp twin)
    cdef readonly str host
    cdef readonly int port
    cdef readonly str vhost
    cdef readonly str user
    cdef str _password
    cdef readonly int heartbeat
    cdef readonly int frame_max
    cdef readonly double connect_timeout
    cdef readonly double rpc_timeout
    cdef readonly object ssl

    # NULL while closed; owned, freed by amqp_destroy_connection in _drop/__dealloc__
    cdef rmq.amqp_connection_state_t _state
    # scratch memory for the tables and properties of one call, recycled in _leave
    cdef rmq.amqp_pool_t _pool
    # channel 1; after a channel error it is reopened by the next call that needs it
    cdef bint _channel_open
    # a call is running (maybe inside rabbitmq-c with the GIL released): rabbitmq-c
    # state must never be touched by two threads at once
    cdef bint _busy
    # close() arrived from another thread during such a call; honoured in _leave
    cdef bint _close_requested

    # publisher confirms on channel 1, nacks and returned mandatory publishes: the
    # compiled build of the ConfirmTracker the py-amqp twin keeps (brokers/_amqp_decisions.py)
    cdef ConfirmTracker _confirms
    # deliveries read while waiting for something else (confirms); drain hands them out
    cdef object _buffer
    # the names of the last delivery, reused while the next one repeats them
    cdef str _last_exchange
    cdef str _last_routing_key
    cdef str _last_consumer_tag

    # publish: frames are built here and sent with one send() (plain TCP); False makes
    # every publish go through rabbitmq-c's amqp_basic_publish (three writes), as TLS does
    cdef public bint direct_writes
    # frames waiting to be sent, owned (PyMem); _out_len bytes of _out_cap are used
    cdef char *_out
    cdef size_t _out_len
    cdef size_t _out_cap

    cdef int _enter(self) except -1
    cdef void _leave(self) noexcept
    cdef int _require(self) except -1
    cdef int _ready(self) except -1
    cdef rmq.amqp_socket_t *_new_socket(self) except NULL
    cdef void _drop(self) noexcept
    cdef int _reset_channel_state(self) except -1
    cdef int _lost(self, str doing, str detail) except -1
    cdef int _raise_for_rpc(self, str doing) except -1
    cdef int _raise_for_reply(self, rmq.amqp_rpc_reply_t reply, str doing) except -1
    cdef int _on_channel_close(self, rmq.amqp_channel_close_t *close) except -1
    cdef int _on_connection_close(self, rmq.amqp_connection_close_t *close) except -1
    cdef int _discard_queued_frames(self) except -1
    cdef int _dispatch_frame(self, rmq.amqp_frame_t *frame) except -1
    cdef int _consume_one(self, rmq.timeval *tv, list out) except -1
    cdef tuple _read_delivery(self, rmq.amqp_channel_t channel,
                              rmq.amqp_basic_deliver_t *deliver)
    cdef tuple _read_content(self, rmq.amqp_channel_t channel, str doing)
    cdef int _next_frame(self, rmq.amqp_frame_t *frame, uint8_t kind,
                         rmq.amqp_channel_t channel, str doing) except -1
    cdef int _reserve(self, size_t more) except -1
    cdef int _frame_publish(self, rmq.amqp_bytes_t exchange, rmq.amqp_bytes_t routing_key,
                            bytes body, dict properties, object headers,
                            bint mandatory) except -1
    cdef int _send_out(self, str doing) except -1
    cdef object _publish_each(self, messages, bint mandatory, bint direct, bint keep_going,
                              Py_ssize_t *committed)
    cdef int _ack_one(self, uint64_t tag, bint multiple, bint direct) except -1
    cdef int _publish_one(self, exchange, routing_key, body, properties, headers,
                          bint mandatory, bint direct) except -1
