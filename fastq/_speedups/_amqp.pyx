"""rabbitmq-c bound from Cython: one AMQP connection with one channel, twin of brokers._amqp_py.

Only the protocol lives here (no policy, no logging): ``fastq.brokers.amqp`` decides what
to do. The interface, the delivery tuples and the exceptions are those of the py-amqp
driver in ``fastq/brokers/_amqp_py.py``; ``tests/integration/test_amqp_driver.py`` runs
both against RabbitMQ and checks they agree byte for byte.

Memory: every rabbitmq-c status and reply is checked; envelopes and messages are
destroyed as soon as they are copied into Python objects; the tables and properties a
call sends live in one ``amqp_pool_t`` recycled when the call returns; the connection is
destroyed by ``close()``, by any fatal error, or at the latest in ``__dealloc__``.

Threads: a Connection belongs to one thread at a time (like the twin). Blocking calls
release the GIL; a second thread calling in meanwhile gets ``RuntimeError``, except
``close()``, which shuts the socket down so that the blocked call returns and finishes
the close itself.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.dict cimport PyDict_Next
from cpython.object cimport PyObject
from cpython.exc cimport PyErr_CheckSignals
from cpython.mem cimport PyMem_Free, PyMem_Realloc
from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.stdint cimport (INT32_MAX, INT32_MIN, int32_t, int64_t, uint8_t, uint16_t, uint32_t,
                          uint64_t)
from libc.string cimport memcmp, memcpy, memset

from fastq._speedups._amqp_decisions cimport ConfirmTracker
from fastq._speedups.includes cimport rabbitmq as rmq

import time
from collections import deque
from datetime import datetime, timezone
from decimal import Decimal

from fastq.exceptions import AMQPError, BrokerConnectionLost

cdef extern from "Python.h":
    const char *PyUnicode_AsUTF8AndSize(object unicode, Py_ssize_t *size) except NULL
    bint PyUnicode_IS_COMPACT_ASCII(object unicode)
    const Py_ssize_t PY_SSIZE_T_MAX
    Py_ssize_t PyUnicode_GET_LENGTH(object unicode)
    void *PyUnicode_DATA(object unicode)

cdef extern from "<errno.h>" nogil:
    int errno
    enum: EAGAIN, EINTR  # EWOULDBLOCK is EAGAIN on Linux

cdef extern from "<string.h>" nogil:
    char *strerror(int errnum)

cdef extern from "<sys/socket.h>" nogil:
    ssize_t send(int fd, const void *buf, size_t n, int flags)
    enum: MSG_NOSIGNAL

cdef extern from "<poll.h>" nogil:
    struct pollfd:
        int fd
        short events
        short revents
    int poll(pollfd *fds, unsigned long nfds, int timeout)
    enum: POLLOUT

#: the linked rabbitmq-c, for the worker banner ("accelerated (rabbitmq-c 0.11.0)")
RABBITMQ_C_VERSION = rmq.amqp_version().decode("ascii")

# channel 1 is the only channel; 0 is the connection's own
cdef rmq.amqp_channel_t CHANNEL = 1
# nested header tables/arrays deeper than this are refused on write (a dict that
# contains itself would otherwise recurse until the C stack overflows) and cut on read
cdef int MAX_DEPTH = 100
# long waits are cut into slices so that Ctrl-C (signals) is seen within this many seconds
cdef double WAIT_SLICE = 0.5
# publish_batch sends what it has framed once this many bytes wait: big enough that a
# batch costs a few send() calls, small enough that the broker starts on it early
cdef size_t FLUSH_AT = 65536
# AMQP frame types and the octet that ends every frame (AMQP 0-9-1, 4.2.3)
cdef char FRAME_METHOD = 1
cdef char FRAME_HEADER = 2
cdef char FRAME_BODY = 3
cdef char FRAME_END = <char>0xCE
# basic.publish: class 60 (basic), method 40
cdef uint16_t BASIC_CLASS = 60
cdef uint16_t BASIC_PUBLISH = 40
# basic.ack: class 60, method 80
cdef uint16_t BASIC_ACK = 80

# connection.close reply code RabbitMQ uses when it closes us on purpose (shutdown,
# rabbitmqctl close_connection): reconnecting is the right answer, as in py-amqp
cdef int CONNECTION_FORCED = 320


# sent with connection.start-ok; the capabilities are the ones this module handles
CLIENT_PROPERTIES = {
    "product": "fastq (rabbitmq-c)",
    "capabilities": {
        "consumer_cancel_notify": True,  # basic.cancel when a consumed queue goes away
        "publisher_confirms": True,
        "basic.nack": True,
        "connection.blocked": True,  # connection.blocked/unblocked are read and ignored
    },
}


# -- bytes and strings -----------------------------------------------------------------------
cdef inline rmq.amqp_bytes_t _view(bytes data):
    """An amqp_bytes_t borrowing ``data``'s buffer (the caller keeps ``data`` alive)."""
    cdef rmq.amqp_bytes_t out
    out.len = <size_t>PyBytes_GET_SIZE(data)
    out.bytes = <void *>PyBytes_AS_STRING(data)
    return out


cdef bytes _shortstr(object value, str what):
    """``value`` as a UTF-8 AMQP short string; checked here so rabbitmq-c never fails mid-frame."""
    cdef bytes data = (value if type(value) is str else str(value)).encode("utf-8")
    if PyBytes_GET_SIZE(data) > 255:
        raise ValueError(f"AMQP {what} is longer than 255 bytes: {value!r}")
    return data


cdef str _shortstr_view(object value, str what, rmq.amqp_bytes_t *out):
    """Point ``out`` at ``value``'s cached UTF-8 form (no copy); the caller keeps the returned
    str alive while ``out`` is used. A str's UTF-8 form is made once and kept by the str, so
    names and ids sent again and again cost no encoding."""
    cdef str text = value if type(value) is str else str(value)
    cdef Py_ssize_t n
    out.bytes = <void *>PyUnicode_AsUTF8AndSize(text, &n)
    if n > 255:
        raise ValueError(f"AMQP {what} is longer than 255 bytes: {value!r}")
    out.len = <size_t>n
    return text


cdef str _text(rmq.amqp_bytes_t b):
    """A short string from the wire (names, properties); never raises on bad UTF-8."""
    if b.len == 0:
        return ""
    try:
        return PyUnicode_DecodeUTF8(<char *>b.bytes, <Py_ssize_t>b.len, "surrogatepass")
    except UnicodeDecodeError:
        return PyUnicode_DecodeUTF8(<char *>b.bytes, <Py_ssize_t>b.len, "surrogateescape")


cdef inline str _same_text(str last, rmq.amqp_bytes_t b):
    """``last`` when ``b`` spells it (ASCII), else ``b`` decoded: the exchange, routing key
    and consumer tag repeat from one delivery to the next, so most are never decoded."""
    if (last is not None and PyUnicode_IS_COMPACT_ASCII(last)
            and <size_t>PyUnicode_GET_LENGTH(last) == b.len
            and memcmp(PyUnicode_DATA(last), b.bytes, b.len) == 0):
        return last
    return _text(b)


cdef object _text_or_bytes(rmq.amqp_bytes_t b):
    """A long string ('S', 'x'): str when it is UTF-8, as py-amqp reads it, else bytes."""
    if b.len == 0:
        return ""
    try:
        return PyUnicode_DecodeUTF8(<char *>b.bytes, <Py_ssize_t>b.len, "surrogatepass")
    except UnicodeDecodeError:
        return PyBytes_FromStringAndSize(<char *>b.bytes, <Py_ssize_t>b.len)


cdef int _pool_copy(rmq.amqp_pool_t *pool, const char *data, size_t n,
                    rmq.amqp_bytes_t *out) except -1:
    """Copy ``n`` bytes into ``pool`` so that no Python object must outlive the encoding."""
    cdef void *dest
    out.len = n
    out.bytes = NULL
    if n == 0:
        return 0
    dest = rmq.amqp_pool_alloc(pool, n)
    if dest == NULL:
        raise MemoryError()
    memcpy(dest, data, n)
    out.bytes = dest
    return 0


cdef object _utf8(str value, const char **data, Py_ssize_t *n):
    """Point ``data``/``n`` at ``value`` in UTF-8; returns the object that owns the bytes
    (keep it while they are read)."""
    cdef bytes encoded
    try:
        # the cached UTF-8 form: no temporary bytes for the common case
        data[0] = PyUnicode_AsUTF8AndSize(value, n)
        return value
    except UnicodeEncodeError:
        # lone surrogates: written as py-amqp writes them
        encoded = value.encode("utf-8", "surrogatepass")
        data[0] = PyBytes_AS_STRING(encoded)
        n[0] = PyBytes_GET_SIZE(encoded)
        return encoded


cdef int _pool_copy_str(rmq.amqp_pool_t *pool, str value, rmq.amqp_bytes_t *out) except -1:
    cdef Py_ssize_t n
    cdef const char *data
    cdef object owner = _utf8(value, &data, &n)
    return _pool_copy(pool, data, <size_t>n, out)


cdef uint64_t _timestamp(object value) except? 0:
    """Unix seconds for a datetime (naive means UTC, as on the wire) or a number."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return <uint64_t>int(value.timestamp())
    return <uint64_t>int(value)


# -- field tables: Python -> rabbitmq-c ----------------------------------------------------------
cdef int _encode_value(object value, rmq.amqp_field_value_t *out, rmq.amqp_pool_t *pool,
                       int depth) except -1:
    """Fill ``out`` from ``value`` with the tags fastq writes: S t I l d F A V T (§1.3.2)."""
    cdef int64_t number
    cdef Py_ssize_t i, n
    cdef rmq.amqp_field_value_t *items
    cdef bytes raw
    if depth > MAX_DEPTH:
        raise ValueError(f"header values nested deeper than {MAX_DEPTH} levels (a cycle?)")
    # bool before int: bool is an int subclass
    if isinstance(value, str):
        out.kind = rmq.AMQP_FIELD_KIND_UTF8
        _pool_copy_str(pool, <str>value, &out.value.bytes)
    elif value is None:
        out.kind = rmq.AMQP_FIELD_KIND_VOID
    elif isinstance(value, bool):
        out.kind = rmq.AMQP_FIELD_KIND_BOOLEAN
        out.value.boolean = 1 if value else 0
    elif isinstance(value, int):
        try:
            number = value
        except OverflowError:
            raise ValueError(f"integer {value} does not fit an AMQP header (signed 64 bits)")
        if INT32_MIN <= number <= INT32_MAX:
            out.kind = rmq.AMQP_FIELD_KIND_I32
            out.value.i32 = <int32_t>number
        else:
            # 'l' is signed int64 for RabbitMQ and rabbitmq-c (py-amqp's 'L')
            out.kind = rmq.AMQP_FIELD_KIND_I64
            out.value.i64 = number
    elif isinstance(value, float):
        out.kind = rmq.AMQP_FIELD_KIND_F64
        out.value.f64 = value
    elif isinstance(value, dict):
        out.kind = rmq.AMQP_FIELD_KIND_TABLE
        _encode_table(value, &out.value.table, pool, depth + 1)
    elif isinstance(value, (list, tuple)):
        out.kind = rmq.AMQP_FIELD_KIND_ARRAY
        out.value.array.num_entries = 0
        out.value.array.entries = NULL
        n = len(value)
        if n:
            items = <rmq.amqp_field_value_t *>rmq.amqp_pool_alloc(
                pool, <size_t>n * sizeof(rmq.amqp_field_value_t))
            if items == NULL:
                raise MemoryError()
            for i in range(n):
                _encode_value(value[i], &items[i], pool, depth + 1)
            out.value.array.entries = items
            out.value.array.num_entries = <int>n
    elif isinstance(value, (bytes, bytearray, memoryview)):
        # 'S' with the raw bytes, never 'x' (§1.3.2)
        raw = value if type(value) is bytes else bytes(value)
        out.kind = rmq.AMQP_FIELD_KIND_UTF8
        _pool_copy(pool, PyBytes_AS_STRING(raw), <size_t>PyBytes_GET_SIZE(raw), &out.value.bytes)
    elif isinstance(value, datetime):
        out.kind = rmq.AMQP_FIELD_KIND_TIMESTAMP
        out.value.u64 = _timestamp(value)
    else:
        raise TypeError(f"cannot put a {type(value).__name__} in an AMQP header: {value!r}")
    return 0


cdef int _encode_table(object table, rmq.amqp_table_t *out, rmq.amqp_pool_t *pool,
                       int depth) except -1:
    """Fill ``out`` from a dict; its memory comes from ``pool``."""
    cdef Py_ssize_t i = 0, n = len(table), size
    cdef rmq.amqp_table_entry_t *entries
    cdef const char *name
    cdef object key = None
    out.num_entries = 0
    out.entries = NULL
    if n == 0:
        return 0
    entries = <rmq.amqp_table_entry_t *>rmq.amqp_pool_alloc(
        pool, <size_t>n * sizeof(rmq.amqp_table_entry_t))
    if entries == NULL:
        raise MemoryError()
    for key, value in table.items():
        if i >= n:
            raise RuntimeError("a header table changed size while it was being encoded")
        # the key's cached UTF-8 form: header names repeat in every message, so this
        # makes no bytes object per key (the key stays alive in the dict while copied)
        name = PyUnicode_AsUTF8AndSize(key if type(key) is str else str(key), &size)
        if size > 255:
            raise ValueError(f"AMQP header name longer than 255 bytes: {key!r}")
        _pool_copy(pool, name, <size_t>size, &entries[i].key)
        try:
            _encode_value(value, &entries[i].value, pool, depth)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"header {key!r}: {exc}") from None
        i += 1
    out.entries = entries
    out.num_entries = <int>i
    return 0


cdef int _encode_arguments(object arguments, rmq.amqp_table_t *out,
                           rmq.amqp_pool_t *pool) except -1:
    if arguments:
        return _encode_table(arguments, out, pool, 0)
    out.num_entries = 0
    out.entries = NULL
    return 0


cdef int _set_shortstr_property(dict properties, str name, rmq.amqp_flags_t flag,
                                rmq.amqp_basic_properties_t *props, rmq.amqp_bytes_t *field,
                                rmq.amqp_pool_t *pool) except -1:
    cdef object value = properties.get(name)
    cdef str text
    cdef const char *data
    cdef Py_ssize_t n
    if value is None:
        return 0
    text = value if type(value) is str else str(value)
    data = PyUnicode_AsUTF8AndSize(text, &n)
    if n > 255:
        # the message is formatted only here: this runs for every property of every publish
        raise ValueError(f"AMQP property {name!r} is longer than 255 bytes: {value!r}")
    _pool_copy(pool, data, <size_t>n, field)
    props._flags |= flag
    return 0


cdef int _encode_properties(dict properties, object headers, rmq.amqp_basic_properties_t *p,
                            rmq.amqp_pool_t *pool) except -1:
    """basic properties from the dict; only keys present and not None are sent."""
    cdef object value
    memset(p, 0, sizeof(rmq.amqp_basic_properties_t))
    _set_shortstr_property(properties, "content_type", rmq.AMQP_BASIC_CONTENT_TYPE_FLAG,
                           p, &p.content_type, pool)
    _set_shortstr_property(properties, "content_encoding", rmq.AMQP_BASIC_CONTENT_ENCODING_FLAG,
                           p, &p.content_encoding, pool)
    if headers:
        _encode_table(headers, &p.headers, pool, 0)
        p._flags |= rmq.AMQP_BASIC_HEADERS_FLAG
    value = properties.get("delivery_mode")
    if value is not None:
        p.delivery_mode = <uint8_t>(int(value) & 0xFF)
        p._flags |= rmq.AMQP_BASIC_DELIVERY_MODE_FLAG
    value = properties.get("priority")
    if value is not None:
        p.priority = <uint8_t>(int(value) & 0xFF)
        p._flags |= rmq.AMQP_BASIC_PRIORITY_FLAG
    _set_shortstr_property(properties, "correlation_id", rmq.AMQP_BASIC_CORRELATION_ID_FLAG,
                           p, &p.correlation_id, pool)
    _set_shortstr_property(properties, "reply_to", rmq.AMQP_BASIC_REPLY_TO_FLAG,
                           p, &p.reply_to, pool)
    _set_shortstr_property(properties, "expiration", rmq.AMQP_BASIC_EXPIRATION_FLAG,
                           p, &p.expiration, pool)
    _set_shortstr_property(properties, "message_id", rmq.AMQP_BASIC_MESSAGE_ID_FLAG,
                           p, &p.message_id, pool)
    value = properties.get("timestamp")
    if value is not None:
        p.timestamp = _timestamp(value)
        p._flags |= rmq.AMQP_BASIC_TIMESTAMP_FLAG
    _set_shortstr_property(properties, "type", rmq.AMQP_BASIC_TYPE_FLAG, p, &p.type, pool)
    _set_shortstr_property(properties, "app_id", rmq.AMQP_BASIC_APP_ID_FLAG,
                           p, &p.app_id, pool)
    return 0


# -- field tables and properties: Python -> the output buffer, directly ------------------------
# The publish frames are written by this module (``_frame_publish``); writing the content
# header's properties straight into them too skips rabbitmq-c's two passes (Python ->
# amqp_table_t in a pool, then amqp_table_t -> bytes). The bytes are the same as
# amqp_encode_properties writes (tests compare both on the wire), and so are the errors:
# a value is refused with ``_encode_value``'s message, in the same order.

class _FrameFull(Exception):
    """The properties outgrew the content header frame (turned into a ValueError)."""


cdef struct _Writer:
    char *p      # where the next byte goes
    char *end    # one past the last byte the frame may hold


cdef inline char *_claim(_Writer *w, size_t n) except NULL:
    """Room for ``n`` more bytes; the start of it."""
    cdef char *at = w.p
    if <size_t>(w.end - w.p) < n:
        raise _FrameFull()
    w.p += n
    return at


cdef int _write_long(_Writer *w, const char *data, size_t n) except -1:
    """A long string: 32-bit length, then the bytes."""
    cdef char *at = _claim(w, 4 + n)
    _put32(at, <uint32_t>n)
    memcpy(at + 4, data, n)
    return 0


cdef int _write_text(_Writer *w, str value) except -1:
    cdef Py_ssize_t n
    cdef const char *data
    cdef object owner = _utf8(value, &data, &n)
    return _write_long(w, data, <size_t>n)


cdef int _write_value(_Writer *w, object value, int depth) except -1:
    """A field value with its kind octet; the kinds and checks of ``_encode_value``."""
    cdef int64_t number
    cdef double real
    cdef uint64_t bits
    cdef char *at
    cdef char *start
    cdef bytes raw
    if depth > MAX_DEPTH:
        raise ValueError(f"header values nested deeper than {MAX_DEPTH} levels (a cycle?)")
    # bool before int: bool is an int subclass
    if isinstance(value, str):
        _claim(w, 1)[0] = <char>rmq.AMQP_FIELD_KIND_UTF8
        _write_text(w, <str>value)
    elif value is None:
        _claim(w, 1)[0] = <char>rmq.AMQP_FIELD_KIND_VOID
    elif isinstance(value, bool):
        at = _claim(w, 2)
        at[0] = <char>rmq.AMQP_FIELD_KIND_BOOLEAN
        at[1] = 1 if value else 0
    elif isinstance(value, int):
        try:
            number = value
        except OverflowError:
            raise ValueError(f"integer {value} does not fit an AMQP header (signed 64 bits)")
        if INT32_MIN <= number <= INT32_MAX:
            at = _claim(w, 5)
            at[0] = <char>rmq.AMQP_FIELD_KIND_I32
            _put32(at + 1, <uint32_t><int32_t>number)
        else:
            at = _claim(w, 9)
            at[0] = <char>rmq.AMQP_FIELD_KIND_I64
            _put64(at + 1, <uint64_t>number)
    elif isinstance(value, float):
        real = value
        memcpy(&bits, &real, 8)
        at = _claim(w, 9)
        at[0] = <char>rmq.AMQP_FIELD_KIND_F64
        _put64(at + 1, bits)
    elif isinstance(value, dict):
        _claim(w, 1)[0] = <char>rmq.AMQP_FIELD_KIND_TABLE
        _write_table(w, value, depth + 1)
    elif isinstance(value, (list, tuple)):
        _claim(w, 1)[0] = <char>rmq.AMQP_FIELD_KIND_ARRAY
        at = _claim(w, 4)
        start = w.p
        for item in value:
            _write_value(w, item, depth + 1)
        _put32(at, <uint32_t>(w.p - start))
    elif isinstance(value, (bytes, bytearray, memoryview)):
        # 'S' with the raw bytes, never 'x' (§1.3.2)
        raw = value if type(value) is bytes else bytes(value)
        _claim(w, 1)[0] = <char>rmq.AMQP_FIELD_KIND_UTF8
        _write_long(w, PyBytes_AS_STRING(raw), <size_t>PyBytes_GET_SIZE(raw))
    elif isinstance(value, datetime):
        bits = _timestamp(value)
        at = _claim(w, 9)
        at[0] = <char>rmq.AMQP_FIELD_KIND_TIMESTAMP
        _put64(at + 1, bits)
    else:
        raise TypeError(f"cannot put a {type(value).__name__} in an AMQP header: {value!r}")
    return 0


cdef int _write_table(_Writer *w, object table, int depth) except -1:
    """A field table: 32-bit length, then each name and value."""
    cdef char *length_at = _claim(w, 4)
    cdef char *start = w.p
    cdef object key = None
    cdef object value
    cdef bint in_value = False
    cdef PyObject *borrowed_key
    cdef PyObject *borrowed_value
    cdef Py_ssize_t pos = 0
    cdef object items = None if type(table) is dict else iter(table.items())
    # one try around the loop, not one per entry: entering a try block costs more than
    # writing a small value
    try:
        while True:
            if items is None:
                # a plain dict (every header table fastq builds) is walked in place
                if not PyDict_Next(table, &pos, &borrowed_key, &borrowed_value):
                    break
                key = <object>borrowed_key
                value = <object>borrowed_value
            else:
                try:
                    key, value = next(items)
                except StopIteration:
                    break
            if not _write_short(w, key if type(key) is str else str(key)):
                raise ValueError(f"AMQP header name longer than 255 bytes: {key!r}")
            in_value = True
            _write_value(w, value, depth)
            in_value = False
    except (TypeError, ValueError) as exc:
        if not in_value:
            raise
        raise type(exc)(f"header {key!r}: {exc}") from None
    _put32(length_at, <uint32_t>(w.p - start))
    return 0


cdef int _write_short(_Writer *w, str text) except -1:
    """A short string (a name, a property): 1 when written, 0 when its UTF-8 form (the
    str's cached one: names repeat in every message) is over 255 bytes."""
    cdef Py_ssize_t n
    cdef const char *data = PyUnicode_AsUTF8AndSize(text, &n)
    cdef char *at
    if n > 255:
        return 0
    at = _claim(w, 1 + <size_t>n)
    at[0] = <char>n
    memcpy(at + 1, data, <size_t>n)
    return 1


cdef int _write_shortstr_property(_Writer *w, dict properties, str name, int flag) except -1:
    """The property as a short string; ``flag`` when written, 0 when absent (None)."""
    cdef object value = properties.get(name)
    if value is None:
        return 0
    if not _write_short(w, value if type(value) is str else str(value)):
        raise ValueError(f"AMQP property {name!r} is longer than 255 bytes: {value!r}")
    return flag


cdef int _write_octet_property(_Writer *w, dict properties, str name, int flag) except -1:
    """The property as one octet; ``flag`` when written, 0 when absent (None)."""
    cdef object value = properties.get(name)
    if value is None:
        return 0
    _claim(w, 1)[0] = <char><uint8_t>(int(value) & 0xFF)
    return flag


cdef int _write_properties(_Writer *w, dict properties, object headers) except -1:
    """The basic class's property flags and the properties present, as
    ``_encode_properties`` picks them (keys present and not None), in the class's order."""
    cdef char *flags_at = _claim(w, 2)
    cdef uint32_t flags = 0
    cdef object value
    flags |= _write_shortstr_property(w, properties, "content_type",
                                      rmq.AMQP_BASIC_CONTENT_TYPE_FLAG)
    flags |= _write_shortstr_property(w, properties, "content_encoding",
                                      rmq.AMQP_BASIC_CONTENT_ENCODING_FLAG)
    if headers:
        _write_table(w, headers, 0)
        flags |= rmq.AMQP_BASIC_HEADERS_FLAG
    flags |= _write_octet_property(w, properties, "delivery_mode",
                                   rmq.AMQP_BASIC_DELIVERY_MODE_FLAG)
    flags |= _write_octet_property(w, properties, "priority", rmq.AMQP_BASIC_PRIORITY_FLAG)
    flags |= _write_shortstr_property(w, properties, "correlation_id",
                                      rmq.AMQP_BASIC_CORRELATION_ID_FLAG)
    flags |= _write_shortstr_property(w, properties, "reply_to", rmq.AMQP_BASIC_REPLY_TO_FLAG)
    flags |= _write_shortstr_property(w, properties, "expiration",
                                      rmq.AMQP_BASIC_EXPIRATION_FLAG)
    flags |= _write_shortstr_property(w, properties, "message_id",
                                      rmq.AMQP_BASIC_MESSAGE_ID_FLAG)
    value = properties.get("timestamp")
    if value is not None:
        _put64(_claim(w, 8), _timestamp(value))
        flags |= rmq.AMQP_BASIC_TIMESTAMP_FLAG
    flags |= _write_shortstr_property(w, properties, "type", rmq.AMQP_BASIC_TYPE_FLAG)
    flags |= _write_shortstr_property(w, properties, "app_id", rmq.AMQP_BASIC_APP_ID_FLAG)
    # the basic class's flags fit one 16-bit word: no continuation bit
    _put16(flags_at, <uint16_t>flags)
    return 0


# -- field tables: rabbitmq-c -> Python ----------------------------------------------------------
cdef object _utc(uint64_t seconds):
    try:
        return datetime.fromtimestamp(seconds, tz=timezone.utc)
    except (OverflowError, OSError, ValueError):
        return seconds  # beyond datetime's range: the number rather than an error


cdef object _decode_value(const rmq.amqp_field_value_t *v, int depth):
    """Every kind rabbitmq-c decodes, as the py-amqp twin returns it."""
    cdef uint8_t kind = v.kind
    if kind == rmq.AMQP_FIELD_KIND_UTF8 or kind == rmq.AMQP_FIELD_KIND_BYTES:
        return _text_or_bytes(v.value.bytes)
    if kind == rmq.AMQP_FIELD_KIND_I32:
        return v.value.i32
    if kind == rmq.AMQP_FIELD_KIND_BOOLEAN:
        return v.value.boolean != 0
    if kind == rmq.AMQP_FIELD_KIND_VOID:
        return None
    if kind == rmq.AMQP_FIELD_KIND_I64:
        return v.value.i64
    if kind == rmq.AMQP_FIELD_KIND_U64:
        # py-amqp writes signed 64-bit ints as 'L', which rabbitmq-c calls unsigned
        return <int64_t>v.value.u64
    if kind == rmq.AMQP_FIELD_KIND_F64:
        return v.value.f64
    if kind == rmq.AMQP_FIELD_KIND_TABLE:
        return _decode_table(&v.value.table, depth + 1)
    if kind == rmq.AMQP_FIELD_KIND_ARRAY:
        return _decode_array(&v.value.array, depth + 1)
    if kind == rmq.AMQP_FIELD_KIND_TIMESTAMP:
        return _utc(v.value.u64)
    if kind == rmq.AMQP_FIELD_KIND_I8:
        return v.value.i8
    if kind == rmq.AMQP_FIELD_KIND_U8:
        return v.value.u8
    if kind == rmq.AMQP_FIELD_KIND_I16:
        return v.value.i16
    if kind == rmq.AMQP_FIELD_KIND_U16:
        return v.value.u16
    if kind == rmq.AMQP_FIELD_KIND_U32:
        return v.value.u32
    if kind == rmq.AMQP_FIELD_KIND_F32:
        return <double>v.value.f32
    if kind == rmq.AMQP_FIELD_KIND_DECIMAL:
        # the value is signed on the wire as py-amqp writes it; same arithmetic as py-amqp
        return Decimal(<int32_t>v.value.decimal.value) / Decimal(10 ** v.value.decimal.decimals)
    return None  # rabbitmq-c refuses unknown kinds before we get here


# Header names repeat in every message (Celery sends the same twenty), so decoded names
# are kept in a small direct-mapped cache: a hit skips the UTF-8 decode, the allocation
# and the string hashing that a fresh str would need as a dict key.
cdef enum:
    KEY_CACHE_SLOTS = 256
    KEY_CACHE_MAX_LEN = 48

cdef struct _KeySlot:
    size_t length
    char data[KEY_CACHE_MAX_LEN]

cdef _KeySlot _key_slots[KEY_CACHE_SLOTS]
cdef list _key_names = [None] * KEY_CACHE_SLOTS


cdef object _key(rmq.amqp_bytes_t b):
    """A table key as str, from the cache when this name was seen before."""
    cdef size_t n = b.len
    cdef const unsigned char *p = <const unsigned char *>b.bytes
    cdef uint32_t h = 2166136261u
    cdef size_t i
    cdef unsigned int slot
    if n == 0 or n > KEY_CACHE_MAX_LEN:
        return _text_or_bytes(b)
    for i in range(n):  # FNV-1a
        h = (h ^ p[i]) * 16777619u
    slot = h % KEY_CACHE_SLOTS
    if _key_slots[slot].length == n and memcmp(_key_slots[slot].data, p, n) == 0:
        return _key_names[slot]
    name = _text_or_bytes(b)
    if type(name) is str:
        _key_slots[slot].length = n
        memcpy(_key_slots[slot].data, p, n)
        _key_names[slot] = name
    return name


cdef dict _decode_table(const rmq.amqp_table_t *t, int depth):
    cdef dict out = {}
    cdef int i
    cdef const rmq.amqp_table_entry_t *entry
    if depth > MAX_DEPTH:
        return out  # only a hostile peer nests this deep; cut rather than exhaust the C stack
    for i in range(t.num_entries):
        entry = &t.entries[i]
        out[_key(entry.key)] = _decode_value(&entry.value, depth)
    return out


cdef list _decode_array(const rmq.amqp_array_t *a, int depth):
    cdef list out = []
    cdef int i
    if depth > MAX_DEPTH:
        return out
    for i in range(a.num_entries):
        out.append(_decode_value(&a.entries[i], depth))
    return out


cdef tuple _decode_properties(const rmq.amqp_basic_properties_t *p):
    """(properties, headers) with the same keys py-amqp gives, timestamp as an int."""
    cdef dict props = {}
    cdef dict headers
    cdef rmq.amqp_flags_t f = p._flags
    if f & rmq.AMQP_BASIC_CONTENT_TYPE_FLAG:
        props["content_type"] = _text(p.content_type)
    if f & rmq.AMQP_BASIC_CONTENT_ENCODING_FLAG:
        props["content_encoding"] = _text(p.content_encoding)
    if f & rmq.AMQP_BASIC_DELIVERY_MODE_FLAG:
        props["delivery_mode"] = p.delivery_mode
    if f & rmq.AMQP_BASIC_PRIORITY_FLAG:
        props["priority"] = p.priority
    if f & rmq.AMQP_BASIC_CORRELATION_ID_FLAG:
        props["correlation_id"] = _text(p.correlation_id)
    if f & rmq.AMQP_BASIC_REPLY_TO_FLAG:
        props["reply_to"] = _text(p.reply_to)
    if f & rmq.AMQP_BASIC_EXPIRATION_FLAG:
        props["expiration"] = _text(p.expiration)
    if f & rmq.AMQP_BASIC_MESSAGE_ID_FLAG:
        props["message_id"] = _text(p.message_id)
    if f & rmq.AMQP_BASIC_TIMESTAMP_FLAG:
        props["timestamp"] = p.timestamp
    if f & rmq.AMQP_BASIC_TYPE_FLAG:
        props["type"] = _text(p.type)
    if f & rmq.AMQP_BASIC_USER_ID_FLAG:
        props["user_id"] = _text(p.user_id)
    if f & rmq.AMQP_BASIC_APP_ID_FLAG:
        props["app_id"] = _text(p.app_id)
    if f & rmq.AMQP_BASIC_CLUSTER_ID_FLAG:
        props["cluster_id"] = _text(p.cluster_id)
    if f & rmq.AMQP_BASIC_HEADERS_FLAG:
        headers = _decode_table(&p.headers, 0)
    else:
        headers = {}
    return props, headers


cdef inline void _put16(char *p, uint16_t v) noexcept:
    p[0] = <char>(v >> 8)
    p[1] = <char>v


cdef inline void _put32(char *p, uint32_t v) noexcept:
    p[0] = <char>(v >> 24)
    p[1] = <char>(v >> 16)
    p[2] = <char>(v >> 8)
    p[3] = <char>v


cdef inline void _put64(char *p, uint64_t v) noexcept:
    _put32(p, <uint32_t>(v >> 32))
    _put32(p + 4, <uint32_t>v)


cdef inline size_t _put_shortstr(char *p, rmq.amqp_bytes_t s) noexcept:
    p[0] = <char>s.len
    memcpy(p + 1, s.bytes, s.len)
    return 1 + s.len


cdef inline void _set_timeval(rmq.timeval *tv, double seconds) noexcept:
    if seconds < 0:
        seconds = 0
    tv.tv_sec = <long>seconds
    tv.tv_usec = <long>((seconds - <double>tv.tv_sec) * 1e6)


# -- the connection ------------------------------------------------------------------------------
cdef class Connection:
    """One AMQP connection with one channel, driven by rabbitmq-c.

    Not thread-safe: use one per thread, as with the py-amqp driver.
    """

    def __cinit__(self, *args, **kwargs):
        self._state = NULL
        rmq.init_amqp_pool(&self._pool, 4096)
        self.direct_writes = True
        self._out = NULL
        self._out_len = self._out_cap = 0
        self._confirms = ConfirmTracker()
        self._buffer = deque()

    def __init__(self, host="127.0.0.1", port=5672, vhost="/", user="guest",
                 password="guest", *, heartbeat=0, frame_max=131072, connect_timeout=4.0,
                 rpc_timeout=30.0, ssl=None):
        self.host = str(host)
        self.port = int(port)
        self.vhost = str(vhost)
        self.user = str(user)
        self._password = str(password)
        self.heartbeat = int(heartbeat or 0)
        self.frame_max = int(frame_max)
        self.connect_timeout = float(connect_timeout)
        self.rpc_timeout = float(rpc_timeout or 0.0)
        self.ssl = ssl

    def __dealloc__(self):
        if self._state != NULL:
            rmq.amqp_destroy_connection(self._state)
            self._state = NULL
        rmq.empty_amqp_pool(&self._pool)
        PyMem_Free(self._out)
        self._out = NULL

    def __repr__(self):
        state = "open" if self._state != NULL else "closed"
        return (f"<fastq rabbitmq-c Connection {self.user}@{self.host}:{self.port}"
                f"{self.vhost} {state}>")

    def __enter__(self):
        self.connect()
        return self

    def __exit__(self, *exc_info):
        self.close()

    # -- plumbing ---------------------------------------------------------------------------
    cdef int _enter(self) except -1:
        if self._busy:
            raise RuntimeError("this fastq AMQP Connection is already in use by another "
                               "thread; give each thread its own Connection")
        self._busy = True
        return 0

    cdef void _leave(self) noexcept:
        rmq.recycle_amqp_pool(&self._pool)
        self._out_len = 0  # frames left unsent by an error never go out later
        if self._state != NULL:
            rmq.amqp_maybe_release_buffers(self._state)
        self._busy = False
        if self._close_requested:
            self._close_requested = False
            self._drop()

    cdef int _require(self) except -1:
        if self._state == NULL:
            raise BrokerConnectionLost(
                f"not connected to RabbitMQ at {self.host}:{self.port} (call connect())")
        return 0

    cdef int _ready(self) except -1:
        """Connected, with channel 1 open (reopened after a channel error)."""
        cdef rmq.amqp_channel_open_ok_t *ok
        self._require()
        if self._channel_open:
            return 0
        with nogil:
            ok = rmq.amqp_channel_open(self._state, CHANNEL)
        if ok == NULL:
            self._raise_for_rpc("open a channel")
        self._reset_channel_state()
        self._channel_open = True
        return 0

    cdef int _reset_channel_state(self) except -1:
        # a new channel has no consumers, prefetch or confirm mode, and the old one's
        # delivery tags mean nothing on it
        self._confirms.new_channel()
        self._buffer.clear()
        return 0

    cdef void _drop(self) noexcept:
        """Destroy the connection without a handshake (it is broken or being abandoned)."""
        if self._state != NULL:
            rmq.amqp_destroy_connection(self._state)
            self._state = NULL
        self._channel_open = False

    cdef int _lost(self, str doing, str detail) except -1:
        self._drop()
        raise BrokerConnectionLost(
            f"lost the connection to RabbitMQ at {self.host}:{self.port} while trying to "
            f"{doing}: {detail}")

    cdef int _raise_for_rpc(self, str doing) except -1:
        """After a synchronous method returned NULL: raise what went wrong."""
        cdef rmq.amqp_rpc_reply_t reply = rmq.amqp_get_rpc_reply(self._state)
        if reply.reply_type == rmq.AMQP_RESPONSE_NORMAL:
            return self._lost(doing, "rabbitmq-c returned no reply")
        return self._raise_for_reply(reply, doing)

    cdef int _raise_for_reply(self, rmq.amqp_rpc_reply_t reply, str doing) except -1:
        """Return 0 for a normal reply, else translate it into fastq's exceptions."""
        if reply.reply_type == rmq.AMQP_RESPONSE_NORMAL:
            return 0
        if reply.reply_type == rmq.AMQP_RESPONSE_SERVER_EXCEPTION:
            if reply.reply.id == rmq.AMQP_CHANNEL_CLOSE_METHOD:
                return self._on_channel_close(<rmq.amqp_channel_close_t *>reply.reply.decoded)
            if reply.reply.id == rmq.AMQP_CONNECTION_CLOSE_METHOD:
                return self._on_connection_close(
                    <rmq.amqp_connection_close_t *>reply.reply.decoded)
            return self._lost(doing, f"unexpected method {reply.reply.id:#010x}")
        if reply.reply_type == rmq.AMQP_RESPONSE_LIBRARY_EXCEPTION:
            return self._lost(doing, rmq.amqp_error_string2(reply.library_error).decode())
        return self._lost(doing, "the server closed the socket")

    cdef int _on_channel_close(self, rmq.amqp_channel_close_t *close) except -1:
        """channel.close from RabbitMQ: answer close-ok, keep the connection, raise."""
        cdef int code = close.reply_code
        cdef str text = _text(close.reply_text)
        cdef rmq.amqp_channel_close_ok_t close_ok
        cdef int status
        # everything still queued was sent before the close and belongs to the dead
        # channel (its deliveries cannot be acked any more)
        self._discard_queued_frames()
        close_ok.dummy = 0
        with nogil:
            status = rmq.amqp_send_method(self._state, CHANNEL, rmq.AMQP_CHANNEL_CLOSE_OK_METHOD,
                                          &close_ok)
        if status != rmq.AMQP_STATUS_OK:
            return self._lost("answer channel.close",
                              rmq.amqp_error_string2(status).decode())
        self._channel_open = False
        self._reset_channel_state()
        raise AMQPError(code, text, "channel")

    cdef int _on_connection_close(self, rmq.amqp_connection_close_t *close) except -1:
        """connection.close from RabbitMQ: answer close-ok (best effort), drop, raise."""
        cdef int code = close.reply_code
        cdef str text = _text(close.reply_text)
        cdef rmq.amqp_connection_close_ok_t close_ok
        close_ok.dummy = 0
        with nogil:
            rmq.amqp_send_method(self._state, 0, rmq.AMQP_CONNECTION_CLOSE_OK_METHOD, &close_ok)
        self._drop()
        if code == CONNECTION_FORCED:
            raise BrokerConnectionLost(
                f"RabbitMQ at {self.host}:{self.port} closed the connection: {code} {text}")
        raise AMQPError(code, text, "connection")

    cdef int _discard_queued_frames(self) except -1:
        cdef rmq.amqp_frame_t frame
        cdef int status
        while self._state != NULL and rmq.amqp_frames_enqueued(self._state):
            status = rmq.amqp_simple_wait_frame(self._state, &frame)  # queued: never blocks
            if status != rmq.AMQP_STATUS_OK:
                return self._lost("read queued frames", rmq.amqp_error_string2(status).decode())
            if (frame.frame_type == rmq.AMQP_FRAME_METHOD and frame.channel == 0
                    and frame.payload.method.id == rmq.AMQP_CONNECTION_CLOSE_METHOD):
                return self._on_connection_close(
                    <rmq.amqp_connection_close_t *>frame.payload.method.decoded)
        return 0

    cdef int _dispatch_frame(self, rmq.amqp_frame_t *frame) except -1:
        """Handle a frame that is not the reply a call waits for."""
        cdef rmq.amqp_method_number_t method
        cdef rmq.amqp_basic_ack_t *ack
        cdef rmq.amqp_basic_nack_t *nack
        cdef rmq.amqp_basic_return_t *returned
        cdef rmq.amqp_channel_flow_t *flow
        cdef rmq.amqp_channel_flow_ok_t flow_ok
        cdef rmq.amqp_channel_t channel = frame.channel
        cdef int status, code
        if frame.frame_type != rmq.AMQP_FRAME_METHOD:
            return 0  # a stray content frame: its method was handled or discarded already
        method = frame.payload.method.id
        if channel == 0:
            if method == rmq.AMQP_CONNECTION_CLOSE_METHOD:
                return self._on_connection_close(
                    <rmq.amqp_connection_close_t *>frame.payload.method.decoded)
            return 0  # connection.blocked / unblocked: nothing to answer
        if method == rmq.AMQP_BASIC_ACK_METHOD:  # basic.ack (60, 80): publisher confirm
            ack = <rmq.amqp_basic_ack_t *>frame.payload.method.decoded
            self._confirms.acked(ack.delivery_tag, ack.multiple)
        elif method == rmq.AMQP_BASIC_NACK_METHOD:  # basic.nack (60, 120)
            nack = <rmq.amqp_basic_nack_t *>frame.payload.method.decoded
            self._confirms.nacked(nack.delivery_tag, nack.multiple)
        elif method == rmq.AMQP_BASIC_DELIVER_METHOD:  # basic.deliver (60, 60)
            # read while waiting for confirms: keep it for the next drain
            self._buffer.append(self._read_delivery(
                channel, <rmq.amqp_basic_deliver_t *>frame.payload.method.decoded))
        elif method == rmq.AMQP_BASIC_RETURN_METHOD:  # basic.return (60, 50): unroutable
            returned = <rmq.amqp_basic_return_t *>frame.payload.method.decoded
            code = returned.reply_code
            text = _text(returned.reply_text)
            # the returned content follows; read it to keep the stream in step
            self._read_content(channel, "read a returned message")
            self._confirms.returned(code, text)
        elif method == rmq.AMQP_CHANNEL_CLOSE_METHOD:  # channel.close (20, 40)
            return self._on_channel_close(
                <rmq.amqp_channel_close_t *>frame.payload.method.decoded)
        elif method == rmq.AMQP_CHANNEL_FLOW_METHOD:  # channel.flow (20, 20): must answer
            flow = <rmq.amqp_channel_flow_t *>frame.payload.method.decoded
            flow_ok.active = flow.active
            with nogil:
                status = rmq.amqp_send_method(self._state, channel,
                                              rmq.AMQP_CHANNEL_FLOW_OK_METHOD, &flow_ok)
            if status != rmq.AMQP_STATUS_OK:
                return self._lost("answer channel.flow", rmq.amqp_error_string2(status).decode())
        elif method == rmq.AMQP_BASIC_CANCEL_METHOD:  # basic.cancel (60, 30) from the server
            # the queue was deleted (or failed over): like py-amqp, report the connection
            # as lost so that the reconnect logic declares and subscribes again
            cancelled = _text((<rmq.amqp_basic_cancel_t *>frame.payload.method.decoded)
                              .consumer_tag)
            return self._lost("receive messages",
                              f"RabbitMQ cancelled consumer {cancelled!r} (queue deleted?)")
        return 0

    cdef int _consume_one(self, rmq.timeval *tv, list out) except -1:
        """One frame within ``tv``: 1 = a delivery appended, 2 = another frame handled,
        0 = nothing came."""
        cdef rmq.amqp_frame_t frame
        cdef int status
        with nogil:
            status = rmq.amqp_simple_wait_frame_noblock(self._state, &frame, tv)
        if status == rmq.AMQP_STATUS_TIMEOUT:
            return 0
        if status != rmq.AMQP_STATUS_OK:
            return self._lost("receive messages", rmq.amqp_error_string2(status).decode())
        if (frame.frame_type == rmq.AMQP_FRAME_METHOD
                and frame.payload.method.id == rmq.AMQP_BASIC_DELIVER_METHOD):
            out.append(self._read_delivery(
                frame.channel, <rmq.amqp_basic_deliver_t *>frame.payload.method.decoded))
            rmq.amqp_maybe_release_buffers(self._state)
            return 1
        self._dispatch_frame(&frame)
        if self._state != NULL:
            rmq.amqp_maybe_release_buffers(self._state)
        return 2

    cdef tuple _read_delivery(self, rmq.amqp_channel_t channel,
                              rmq.amqp_basic_deliver_t *deliver):
        """The delivery tuple both drivers return, for a basic.deliver just read."""
        # read before the content frames: they may reuse the memory ``deliver`` is in
        cdef uint64_t tag = deliver.delivery_tag
        cdef bint redelivered = deliver.redelivered
        exchange = self._last_exchange = _same_text(self._last_exchange, deliver.exchange)
        routing_key = self._last_routing_key = _same_text(self._last_routing_key,
                                                          deliver.routing_key)
        consumer_tag = self._last_consumer_tag = _same_text(self._last_consumer_tag,
                                                            deliver.consumer_tag)
        properties, headers, body = self._read_content(channel, "receive a message")
        return (tag, redelivered, exchange, routing_key, consumer_tag, properties, headers,
                body)

    cdef tuple _read_content(self, rmq.amqp_channel_t channel, str doing):
        """(properties, headers, body) of the content that follows a method with one.

        Decoded from the frames as they are read: rabbitmq-c's amqp_read_message would
        first copy the properties, their header table and the body into a message of its
        own, for each delivery."""
        cdef rmq.amqp_frame_t frame
        cdef uint64_t size, got = 0
        cdef size_t n
        cdef char *into
        self._next_frame(&frame, rmq.AMQP_FRAME_HEADER, channel, doing)
        size = frame.payload.properties.body_size
        if size > <uint64_t>PY_SSIZE_T_MAX:
            self._lost(doing, f"a message body of {size} bytes")
        properties, headers = _decode_properties(
            <rmq.amqp_basic_properties_t *>frame.payload.properties.decoded)
        try:
            body = PyBytes_FromStringAndSize(NULL, <Py_ssize_t>size)
        except MemoryError:
            # a size no memory holds is a damaged header (RabbitMQ's own limit is 512 MiB)
            self._lost(doing, f"cannot hold a message body of {size} bytes")
        into = PyBytes_AS_STRING(body)
        while got < size:
            self._next_frame(&frame, rmq.AMQP_FRAME_BODY, channel, doing)
            n = frame.payload.body_fragment.len
            if n > size - got:
                self._lost(doing, f"the body is longer than the {size} bytes its header "
                                  f"announced")
            memcpy(into + got, frame.payload.body_fragment.bytes, n)
            got += n
        return properties, headers, body

    cdef int _next_frame(self, rmq.amqp_frame_t *frame, uint8_t kind,
                         rmq.amqp_channel_t channel, str doing) except -1:
        """The next frame of a content being read, which must be a ``kind`` frame on
        ``channel``; connection-level methods in between (connection.blocked,
        connection.close) are handled here. RabbitMQ sends a content's frames one after
        the other: one that has not come within rpc_timeout never will."""
        cdef int status
        cdef rmq.timeval tv
        cdef double waited = 0.0, step
        while True:
            step = WAIT_SLICE
            if 0 < self.rpc_timeout - waited < step:
                step = self.rpc_timeout - waited
            _set_timeval(&tv, step)
            with nogil:
                status = rmq.amqp_simple_wait_frame_noblock(self._state, frame, &tv)
            if status == rmq.AMQP_STATUS_TIMEOUT:
                waited += step
                if self.rpc_timeout > 0 and waited >= self.rpc_timeout:
                    return self._lost(doing, f"the rest of a message did not come within "
                                             f"{self.rpc_timeout:g} s (rpc_timeout)")
                PyErr_CheckSignals()
                continue
            if status != rmq.AMQP_STATUS_OK:
                return self._lost(doing, rmq.amqp_error_string2(status).decode())
            if frame.frame_type == rmq.AMQP_FRAME_METHOD and frame.channel == 0:
                self._dispatch_frame(frame)  # raises for connection.close
                continue
            if frame.frame_type != kind or frame.channel != channel:
                return self._lost(doing, f"expected a content frame of type {kind} on channel "
                                         f"{channel}, got type {frame.frame_type} on channel "
                                         f"{frame.channel}")
            return 0

    # -- lifecycle ----------------------------------------------------------------------------
    @property
    def is_open(self):
        return self._state != NULL

    def connect(self):
        """Open the socket, log in and open the channel; idempotent.

        Raises:
            BrokerConnectionLost: the server cannot be reached (or went away mid-handshake).
            AMQPError: RabbitMQ refused the login or the vhost.
        """
        cdef rmq.amqp_socket_t *sock
        cdef rmq.timeval tv
        cdef rmq.amqp_rpc_reply_t reply
        cdef rmq.amqp_table_t client_properties
        cdef int status, port = self.port, frame_max = self.frame_max
        cdef int heartbeat = self.heartbeat
        cdef bytes host = self.host.encode()
        cdef bytes vhost = self.vhost.encode("utf-8")
        cdef bytes user = self.user.encode("utf-8")
        cdef bytes password = self._password.encode("utf-8")
        cdef const char *c_host = host
        cdef const char *c_vhost = vhost
        cdef const char *c_user = user
        cdef const char *c_password = password
        if self._state != NULL:
            return
        self._enter()
        try:
            self._channel_open = False
            self._reset_channel_state()
            self._confirms.new_connection()
            self._state = rmq.amqp_new_connection()
            if self._state == NULL:
                raise MemoryError("rabbitmq-c could not allocate a connection")
            sock = self._new_socket()
            _set_timeval(&tv, self.connect_timeout)
            # bounds the AMQP handshake as well as the TCP connect
            rmq.amqp_set_handshake_timeout(self._state, &tv)
            with nogil:
                status = rmq.amqp_socket_open_noblock(sock, c_host, port, &tv)
            if status != rmq.AMQP_STATUS_OK:
                self._drop()
                raise BrokerConnectionLost(
                    f"cannot connect to RabbitMQ at {self.host}:{self.port}: "
                    f"{rmq.amqp_error_string2(status).decode()}")
            # merged by rabbitmq-c into its defaults; without consumer_cancel_notify
            # RabbitMQ drops a consumer whose queue is deleted without telling us
            _encode_table(CLIENT_PROPERTIES, &client_properties, &self._pool, 0)
            with nogil:
                reply = rmq.amqp_login_with_properties(
                    self._state, c_vhost, 0, frame_max, heartbeat, &client_properties,
                    rmq.AMQP_SASL_METHOD_PLAIN, c_user, c_password)
            self._raise_for_reply(reply, "log in")
            # channel.open is part of connecting: bounded like the handshake
            rmq.amqp_set_rpc_timeout(self._state, &tv)
            self._ready()
            # every later RPC (declare, qos, consume, ...) within rpc_timeout: a reply cut
            # short or never sent otherwise waited for ever; past it the connection is
            # dropped (rabbitmq-c cannot resume a half-read frame) and reconnected
            if self.rpc_timeout > 0:
                _set_timeval(&tv, self.rpc_timeout)
                rmq.amqp_set_rpc_timeout(self._state, &tv)
            else:
                rmq.amqp_set_rpc_timeout(self._state, NULL)
        except BaseException:
            self._drop()
            raise
        finally:
            self._leave()

    cdef rmq.amqp_socket_t *_new_socket(self) except NULL:
        cdef rmq.amqp_socket_t *sock
        cdef dict options
        cdef bytes cafile, certfile, keyfile
        if not self.ssl:
            sock = rmq.amqp_tcp_socket_new(self._state)
            if sock == NULL:
                raise MemoryError("rabbitmq-c could not create a TCP socket")
            return sock
        sock = rmq.amqp_ssl_socket_new(self._state)
        if sock == NULL:
            raise BrokerConnectionLost("rabbitmq-c could not create a TLS socket (OpenSSL)")
        options = self.ssl if isinstance(self.ssl, dict) else {}
        if options.get("cafile"):
            cafile = str(options["cafile"]).encode()
            if rmq.amqp_ssl_socket_set_cacert(sock, cafile) != rmq.AMQP_STATUS_OK:
                raise BrokerConnectionLost(f"cannot load the CA file {options['cafile']!r}")
        if options.get("certfile"):
            certfile = str(options["certfile"]).encode()
            keyfile = str(options.get("keyfile") or options["certfile"]).encode()
            if rmq.amqp_ssl_socket_set_key(sock, certfile, keyfile) != rmq.AMQP_STATUS_OK:
                raise BrokerConnectionLost(
                    f"cannot load the client certificate {options['certfile']!r}")
        verify = bool(options.get("verify", True))
        rmq.amqp_ssl_socket_set_verify_peer(sock, verify)
        rmq.amqp_ssl_socket_set_verify_hostname(sock, verify)
        return sock

    def close(self):
        """Close the channel and connection politely if possible; never raises."""
        cdef rmq.timeval tv
        cdef int fd
        if self._busy:
            # another thread is inside rabbitmq-c on this connection: wake it by shutting
            # the socket down; it destroys the connection on its way out (_leave)
            self._close_requested = True
            if self._state != NULL:
                fd = rmq.amqp_get_sockfd(self._state)
                if fd >= 0:
                    rmq.shutdown(fd, rmq.SHUT_RDWR)
            return
        self._buffer.clear()
        if self._state == NULL:
            return
        self._busy = True
        try:
            # a dead peer must not hang us: bound the connection.close round trip
            _set_timeval(&tv, min(self.connect_timeout, 2.0))
            rmq.amqp_set_rpc_timeout(self._state, &tv)
            with nogil:
                rmq.amqp_connection_close(self._state, rmq.AMQP_REPLY_SUCCESS)
        finally:
            self._drop()
            self._busy = False
            self._close_requested = False

    def fileno(self):
        """The socket's file descriptor, for waiting on it in an event loop."""
        self._require()
        return rmq.amqp_get_sockfd(self._state)

    # -- topology -----------------------------------------------------------------------------
    def declare_exchange(self, name, type="direct", durable=True, auto_delete=False,
                         arguments=None):
        cdef bytes b_name = _shortstr(name, "exchange name")
        cdef rmq.amqp_bytes_t v_name = _view(b_name)
        cdef bytes b_type = _shortstr(type, "exchange type")
        cdef rmq.amqp_bytes_t v_type = _view(b_type)
        cdef rmq.amqp_table_t args
        cdef rmq.amqp_exchange_declare_ok_t *ok
        cdef bint c_durable = durable, c_auto_delete = auto_delete
        self._enter()
        try:
            self._ready()
            _encode_arguments(arguments, &args, &self._pool)
            with nogil:
                ok = rmq.amqp_exchange_declare(self._state, CHANNEL, v_name,
                                               v_type, 0, c_durable, c_auto_delete, 0,
                                               args)
            if ok == NULL:
                self._raise_for_rpc(f"declare exchange {name!r}")
        finally:
            self._leave()

    def declare_queue(self, name, durable=True, exclusive=False, auto_delete=False,
                      arguments=None, passive=False):
        """Declare (or with ``passive`` only look up) a queue.

        Returns:
            ``(name, message_count, consumer_count)``; ``message_count`` is the ready
            messages.
        Raises:
            AMQPError: 404 for a passive declare of a missing queue, 406 when the
            queue exists with other flags or arguments.
        """
        cdef bytes b_name = _shortstr(name, "queue name")
        cdef rmq.amqp_bytes_t v_name = _view(b_name)
        cdef rmq.amqp_table_t args
        cdef rmq.amqp_queue_declare_ok_t *ok
        cdef bint c_passive = passive, c_durable = durable, c_exclusive = exclusive
        cdef bint c_auto_delete = auto_delete
        self._enter()
        try:
            self._ready()
            _encode_arguments(arguments, &args, &self._pool)
            with nogil:
                ok = rmq.amqp_queue_declare(self._state, CHANNEL, v_name, c_passive,
                                            c_durable, c_exclusive, c_auto_delete, args)
            if ok == NULL:
                self._raise_for_rpc(f"declare queue {name!r}")
            return (_text(ok.queue), ok.message_count, ok.consumer_count)
        finally:
            self._leave()

    def bind_queue(self, queue, exchange, routing_key):
        cdef bytes b_queue = _shortstr(queue, "queue name")
        cdef rmq.amqp_bytes_t v_queue = _view(b_queue)
        cdef rmq.amqp_bytes_t v_exchange
        cdef rmq.amqp_bytes_t v_key
        # the strs returned own the buffers the views borrow: keep them until sent
        cdef str s_exchange = _shortstr_view(exchange, "exchange name", &v_exchange)
        cdef str s_key = _shortstr_view(routing_key, "routing key", &v_key)
        cdef rmq.amqp_queue_bind_ok_t *ok
        self._enter()
        try:
            self._ready()
            with nogil:
                ok = rmq.amqp_queue_bind(self._state, CHANNEL, v_queue,
                                         v_exchange, v_key, rmq.amqp_empty_table)
            if ok == NULL:
                self._raise_for_rpc(f"bind queue {queue!r} to {exchange!r}")
        finally:
            self._leave()

    def purge_queue(self, name):
        cdef bytes b_name = _shortstr(name, "queue name")
        cdef rmq.amqp_bytes_t v_name = _view(b_name)
        cdef rmq.amqp_queue_purge_ok_t *ok
        self._enter()
        try:
            self._ready()
            with nogil:
                ok = rmq.amqp_queue_purge(self._state, CHANNEL, v_name)
            if ok == NULL:
                self._raise_for_rpc(f"purge queue {name!r}")
            return ok.message_count
        finally:
            self._leave()

    def delete_queue(self, name):
        cdef bytes b_name = _shortstr(name, "queue name")
        cdef rmq.amqp_bytes_t v_name = _view(b_name)
        cdef rmq.amqp_queue_delete_ok_t *ok
        self._enter()
        try:
            self._ready()
            with nogil:
                ok = rmq.amqp_queue_delete(self._state, CHANNEL, v_name, 0, 0)
            if ok == NULL:
                self._raise_for_rpc(f"delete queue {name!r}")
        finally:
            self._leave()

    # -- consuming ----------------------------------------------------------------------------
    def qos(self, prefetch_count):
        cdef int count = prefetch_count
        cdef rmq.amqp_basic_qos_ok_t *ok
        if not 0 <= count <= 0xFFFF:
            raise ValueError(f"prefetch_count must be 0..65535, not {prefetch_count}")
        self._enter()
        try:
            self._ready()
            with nogil:
                ok = rmq.amqp_basic_qos(self._state, CHANNEL, 0, <unsigned short>count, 0)
            if ok == NULL:
                self._raise_for_rpc("set the prefetch count")
        finally:
            self._leave()

    def consume(self, queue, consumer_tag="", no_ack=False):
        """Start a consumer on ``queue``; ``drain`` returns its deliveries. Returns the tag."""
        cdef bytes b_queue = _shortstr(queue, "queue name")
        cdef rmq.amqp_bytes_t v_queue = _view(b_queue)
        cdef bytes b_tag = _shortstr(consumer_tag, "consumer tag")
        cdef rmq.amqp_bytes_t v_tag = _view(b_tag)
        cdef rmq.amqp_basic_consume_ok_t *ok
        cdef bint c_no_ack = no_ack
        self._enter()
        try:
            self._ready()
            with nogil:
                ok = rmq.amqp_basic_consume(self._state, CHANNEL, v_queue, v_tag,
                                            0, c_no_ack, 0, rmq.amqp_empty_table)
            if ok == NULL:
                self._raise_for_rpc(f"consume from {queue!r}")
            return _text(ok.consumer_tag)
        finally:
            self._leave()

    def cancel(self, consumer_tag):
        cdef bytes b_tag = _shortstr(consumer_tag, "consumer tag")
        cdef rmq.amqp_bytes_t v_tag = _view(b_tag)
        cdef rmq.amqp_basic_cancel_ok_t *ok
        self._enter()
        try:
            self._ready()
            with nogil:
                ok = rmq.amqp_basic_cancel(self._state, CHANNEL, v_tag)
            if ok == NULL:
                self._raise_for_rpc(f"cancel consumer {consumer_tag!r}")
        finally:
            self._leave()

    def drain(self, int max_count, double timeout):
        """Up to ``max_count`` deliveries: wait up to ``timeout`` s for the first, then
        take only what has already arrived. Heartbeats are sent and checked meanwhile
        (by rabbitmq-c, while it waits)."""
        cdef list out = []
        cdef rmq.timeval tv
        cdef double deadline, remaining, step
        cdef int got
        cdef object buffer = self._buffer
        self._enter()
        try:
            self._require()
            while buffer and len(out) < max_count:
                out.append(buffer.popleft())
            if not out and max_count > 0:
                deadline = time.monotonic() + (timeout if timeout > 0 else 0.0)
                while not out:
                    remaining = deadline - time.monotonic()
                    step = remaining if remaining < WAIT_SLICE else WAIT_SLICE
                    _set_timeval(&tv, step)
                    got = self._consume_one(&tv, out)
                    if got == 0:
                        if remaining <= WAIT_SLICE:
                            break
                        PyErr_CheckSignals()  # raises KeyboardInterrupt & co.
            # the rest of the batch: only what rabbitmq-c or the kernel already holds
            _set_timeval(&tv, 0.0)
            while 0 < len(out) < max_count:
                if self._consume_one(&tv, out) == 0:
                    break
            return out
        finally:
            self._leave()

    def get(self, queue, no_ack=False):
        """One message by basic.get, or None when ``queue`` is empty."""
        cdef bytes b_queue = _shortstr(queue, "queue name")
        cdef rmq.amqp_bytes_t v_queue = _view(b_queue)
        cdef rmq.amqp_rpc_reply_t reply
        cdef rmq.amqp_basic_get_ok_t *ok
        cdef bint c_no_ack = no_ack, redelivered
        cdef uint64_t tag
        self._enter()
        try:
            self._ready()
            with nogil:
                reply = rmq.amqp_basic_get(self._state, CHANNEL, v_queue, c_no_ack)
            self._raise_for_reply(reply, f"get from {queue!r}")
            if reply.reply.id == rmq.AMQP_BASIC_GET_EMPTY_METHOD:
                return None
            if reply.reply.id != rmq.AMQP_BASIC_GET_OK_METHOD:
                self._lost(f"get from {queue!r}", f"unexpected method {reply.reply.id:#010x}")
            ok = <rmq.amqp_basic_get_ok_t *>reply.reply.decoded
            tag = ok.delivery_tag
            redelivered = ok.redelivered
            exchange = _text(ok.exchange)
            routing_key = _text(ok.routing_key)
            properties, headers, body = self._read_content(CHANNEL, f"get from {queue!r}")
            rmq.amqp_maybe_release_buffers(self._state)
            return (tag, redelivered, exchange, routing_key, "", properties, headers, body)
        finally:
            self._leave()

    def ack(self, delivery_tag, multiple=False):
        cdef uint64_t tag = delivery_tag
        cdef bint c_multiple = multiple
        cdef int status
        self._enter()
        try:
            self._ready()
            with nogil:
                status = rmq.amqp_basic_ack(self._state, CHANNEL, tag, c_multiple)
            if status != rmq.AMQP_STATUS_OK:
                self._lost("ack", rmq.amqp_error_string2(status).decode())
        finally:
            self._leave()

    def reject(self, delivery_tag, requeue):
        cdef uint64_t tag = delivery_tag
        cdef bint c_requeue = requeue
        cdef int status
        self._enter()
        try:
            self._ready()
            with nogil:
                status = rmq.amqp_basic_reject(self._state, CHANNEL, tag, c_requeue)
            if status != rmq.AMQP_STATUS_OK:
                self._lost("reject", rmq.amqp_error_string2(status).decode())
        finally:
            self._leave()

    def nack(self, delivery_tag, multiple, requeue):
        cdef uint64_t tag = delivery_tag
        cdef bint c_multiple = multiple, c_requeue = requeue
        cdef int status
        self._enter()
        try:
            self._ready()
            with nogil:
                status = rmq.amqp_basic_nack(self._state, CHANNEL, tag, c_multiple, c_requeue)
            if status != rmq.AMQP_STATUS_OK:
                self._lost("nack", rmq.amqp_error_string2(status).decode())
        finally:
            self._leave()

    # -- producing ----------------------------------------------------------------------------
    def publish(self, exchange, routing_key, body, properties, headers,
                mandatory=False):
        """basic.publish; with confirms on, ``wait_for_confirms`` settles it later.

        Raises:
            TypeError, ValueError: a header or property value AMQP cannot carry.
        """
        self._enter()
        try:
            self._ready()
            self._publish_one(exchange, routing_key, body, properties, headers, mandatory,
                              self.direct_writes and not self.ssl)
            self._confirms.published()
            if self._out_len:
                self._send_out(f"publish to {exchange!r}/{routing_key!r}")
        finally:
            self._leave()

    def publish_batch(self, messages, mandatory=False):
        """basic.publish each ``(exchange, routing_key, body, properties, headers)``.

        The frames go out in as few writes as fit ``FLUSH_AT`` bytes each, rather than
        three writes per message; in order, like as many ``publish`` calls. When a
        message cannot be encoded, the ones before it are still sent, then the error
        is raised.

        Raises:
            TypeError, ValueError: a header or property value AMQP cannot carry.
        """
        cdef object failure
        cdef Py_ssize_t committed = 0
        self._enter()
        try:
            self._ready()
            failure = self._publish_each(messages, mandatory, self.direct_writes and not self.ssl,
                                         False, &committed)
            if self._out_len:
                self._send_out("publish a batch")
            if failure is not None:
                raise failure
        finally:
            # once per batch, not per message: nothing is read (no confirm can come in)
            # before this returns
            self._confirms.published(committed)
            self._leave()

    def publish_and_ack(self, messages, upto, singles):
        """``publish_batch(messages)``, then basic.ack of every tag up to ``upto`` (None:
        none) and of each tag in ``singles``, in one write where they fit ``FLUSH_AT``.

        A worker's results (rpc:// replies), then the acks of the tasks they belong to:
        in this order on the wire, so a task is never acked before its result is out, and
        RabbitMQ reads both at once. A message that cannot be encoded is left out, the
        others and the acks still go, then its error is raised.

        Raises:
            TypeError, ValueError: a header or property value AMQP cannot carry.
        """
        cdef bint direct = self.direct_writes and not self.ssl
        cdef object failure
        cdef Py_ssize_t committed = 0
        self._enter()
        try:
            self._ready()
            failure = self._publish_each(messages, False, direct, True, &committed)
            if upto is not None:
                self._ack_one(upto, True, direct)
            for tag in singles:
                self._ack_one(tag, False, direct)
            if self._out_len:
                self._send_out("ack")
        finally:
            self._confirms.published(committed)
            self._leave()
        if failure is not None:
            raise failure

    cdef object _publish_each(self, messages, bint mandatory, bint direct, bint keep_going,
                              Py_ssize_t *committed):
        """Frame (``direct``) or send each ``(exchange, routing_key, body, properties,
        headers)`` in order, writing whenever ``FLUSH_AT`` bytes wait; ``committed`` counts
        them. Returns the first encoding error (None: none), after which the rest are left
        out, or with ``keep_going`` only the bad one."""
        cdef object failure = None
        for exchange, routing_key, body, properties, headers in messages:
            try:
                self._publish_one(exchange, routing_key, body, properties, headers,
                                  mandatory, direct)
            except (TypeError, ValueError) as exc:
                if failure is None:
                    failure = exc
                if keep_going:
                    continue
                break
            committed[0] += 1
            rmq.recycle_amqp_pool(&self._pool)
            if self._out_len >= FLUSH_AT:
                self._send_out("publish a batch")
        return failure

    cdef int _ack_one(self, uint64_t tag, bint multiple, bint direct) except -1:
        """Frame one basic.ack into the output buffer (``direct``) or send it through
        rabbitmq-c."""
        cdef char *p
        cdef int status
        if not direct:
            with nogil:
                status = rmq.amqp_basic_ack(self._state, CHANNEL, tag, multiple)
            if status != rmq.AMQP_STATUS_OK:
                self._lost("ack", rmq.amqp_error_string2(status).decode())
            return 0
        # the bytes amqp_basic_ack writes: a 13-byte method payload, class and method,
        # the tag, and the multiple bit
        self._reserve(21)
        p = self._out + self._out_len
        p[0] = FRAME_METHOD
        _put16(p + 1, CHANNEL)
        _put32(p + 3, 13)
        _put16(p + 7, BASIC_CLASS)
        _put16(p + 9, BASIC_ACK)
        _put64(p + 11, tag)
        p[19] = 1 if multiple else 0
        p[20] = FRAME_END
        self._out_len += 21
        return 0

    cdef int _publish_one(self, exchange, routing_key, body, properties, headers,
                          bint mandatory, bint direct) except -1:
        """Frame one publish into the output buffer (``direct``) or send it through
        rabbitmq-c; the caller counts it for confirms once it is committed to either."""
        cdef rmq.amqp_bytes_t v_exchange
        cdef rmq.amqp_bytes_t v_key
        # the strs returned own the buffers the views borrow: keep them until sent
        cdef str s_exchange = _shortstr_view(exchange, "exchange name", &v_exchange)
        cdef str s_key = _shortstr_view(routing_key, "routing key", &v_key)
        cdef bytes b_body
        cdef rmq.amqp_bytes_t v_body
        cdef rmq.amqp_basic_properties_t props
        cdef int status
        if type(body) is bytes:
            b_body = <bytes>body
        elif isinstance(body, (bytes, bytearray, memoryview)):
            b_body = bytes(body)
        else:
            raise TypeError(f"a message body must be bytes, not {type(body).__name__}")
        if type(properties) is not dict:
            properties = dict(properties or {})
        if direct:
            self._frame_publish(v_exchange, v_key, b_body, <dict>properties, headers,
                                mandatory)
        else:
            _encode_properties(<dict>properties, headers, &props, &self._pool)
            v_body = _view(b_body)
            with nogil:
                status = rmq.amqp_basic_publish(self._state, CHANNEL, v_exchange,
                                                v_key, mandatory, 0, &props, v_body)
            if status != rmq.AMQP_STATUS_OK:
                self._lost(f"publish to {exchange!r}/{routing_key!r}",
                           rmq.amqp_error_string2(status).decode())
        return 0

    cdef int _reserve(self, size_t more) except -1:
        """Room for ``more`` bytes after what the output buffer holds."""
        cdef size_t need = self._out_len + more
        cdef size_t cap = self._out_cap if self._out_cap else 2 * FLUSH_AT
        cdef char *grown
        if need <= self._out_cap:
            return 0
        while cap < need:
            cap *= 2
        grown = <char *>PyMem_Realloc(self._out, cap)
        if grown == NULL:
            raise MemoryError()
        self._out = grown
        self._out_cap = cap
        return 0

    cdef int _frame_publish(self, rmq.amqp_bytes_t exchange, rmq.amqp_bytes_t routing_key,
                            bytes body, dict properties, object headers,
                            bint mandatory) except -1:
        """Append the frames of one basic.publish: method, content header, body frames.

        The same bytes amqp_basic_publish writes (tests compare them on the wire),
        properties included (``_write_properties``)."""
        cdef size_t frame_max = <size_t>rmq.amqp_get_frame_max(self._state)
        # 7-byte frame header and the end octet around each payload
        cdef size_t chunk = frame_max - 8
        cdef size_t body_len = <size_t>PyBytes_GET_SIZE(body)
        cdef const char *body_data = PyBytes_AS_STRING(body)
        cdef size_t frames = (body_len + chunk - 1) // chunk
        cdef size_t off, start, n
        cdef int written
        cdef char *p
        cdef _Writer writer
        # method frame (at most 527 bytes), a header frame (at most frame_max), the body
        self._reserve(600 + frame_max + body_len + 8 * frames)
        p = self._out + self._out_len
        # basic.publish: reserved short, exchange, routing key, mandatory/immediate bits
        p[0] = FRAME_METHOD
        _put16(p + 1, CHANNEL)
        off = 7
        _put16(p + off, BASIC_CLASS)
        _put16(p + off + 2, BASIC_PUBLISH)
        _put16(p + off + 4, 0)
        off += 6
        off += _put_shortstr(p + off, exchange)
        off += _put_shortstr(p + off, routing_key)
        p[off] = 1 if mandatory else 0
        off += 1
        _put32(p + 3, <uint32_t>(off - 7))
        p[off] = FRAME_END
        off += 1
        # content header: class, weight 0, body size, then flags and properties
        start = off
        p[off] = FRAME_HEADER
        _put16(p + off + 1, CHANNEL)
        _put16(p + off + 7, BASIC_CLASS)
        _put16(p + off + 9, 0)
        _put64(p + off + 11, body_len)
        writer.p = p + off + 19
        writer.end = writer.p + (frame_max - 8 - 12)
        try:
            _write_properties(&writer, properties, headers)
        except _FrameFull:
            raise ValueError(f"the message's properties and headers do not fit one AMQP "
                             f"frame (frame_max {frame_max} bytes)") from None
        written = <int>(writer.p - (p + off + 19))
        _put32(p + start + 3, <uint32_t>(12 + written))
        off = start + 19 + <size_t>written
        p[off] = FRAME_END
        off += 1
        # body frames of at most frame_max bytes each
        n = 0
        while n < body_len:
            start = body_len - n if body_len - n < chunk else chunk
            p[off] = FRAME_BODY
            _put16(p + off + 1, CHANNEL)
            _put32(p + off + 3, <uint32_t>start)
            memcpy(p + off + 7, body_data + n, start)
            off += 7 + start
            p[off] = FRAME_END
            off += 1
            n += start
        self._out_len += off
        return 0

    cdef int _send_out(self, str doing) except -1:
        """Write the output buffer to the socket; the connection is lost if that fails.

        While RabbitMQ does not read (it blocks publishers on a resource alarm), this
        waits, seeing signals every WAIT_SLICE."""
        cdef int fd = rmq.amqp_get_sockfd(self._state)
        cdef const char *p = self._out
        cdef size_t left = self._out_len
        cdef ssize_t n
        cdef int err = 0, ready
        cdef int slice_ms = <int>(WAIT_SLICE * 1000)
        cdef pollfd waiting
        self._out_len = 0
        while left:
            with nogil:
                while left:
                    n = send(fd, p, left, MSG_NOSIGNAL)
                    if n >= 0:
                        p += n
                        left -= <size_t>n
                        continue
                    err = errno
                    if err == EINTR:
                        continue
                    if err != EAGAIN:
                        break
                    # the socket buffer is full: RabbitMQ reads slower than we write
                    waiting.fd = fd
                    waiting.events = POLLOUT
                    waiting.revents = 0
                    ready = poll(&waiting, 1, slice_ms)
                    if ready < 0 and errno != EINTR:
                        err = errno
                        break
                    err = 0
                    if ready == 0:
                        break  # a slice without progress: look at signals
            if err:
                return self._lost(doing, strerror(err).decode("utf-8", "replace"))
            try:
                PyErr_CheckSignals()
            except BaseException:
                self._drop()  # a frame may be half written: this stream cannot go on
                raise
        return 0

    def confirm_select(self):
        """Turn on publisher confirms for this channel (a RabbitMQ extension)."""
        cdef rmq.amqp_confirm_select_ok_t *ok
        self._enter()
        try:
            self._ready()
            with nogil:
                ok = rmq.amqp_confirm_select(self._state, CHANNEL)
            if ok == NULL:
                self._raise_for_rpc("enable publisher confirms")
            self._confirms.select()
        finally:
            self._leave()

    def wait_for_confirms(self, double timeout):
        """Wait until RabbitMQ has confirmed every publish so far.

        Raises:
            PublishNacked: one or more publishes were nacked, or returned as unroutable
                (``mandatory``).
            PublishTimeout: not all confirms arrived within ``timeout`` seconds.
        """
        cdef double deadline = time.monotonic() + (timeout if timeout > 0 else 0.0)
        cdef double remaining
        cdef rmq.timeval tv
        cdef rmq.amqp_frame_t frame
        cdef int status
        cdef ConfirmTracker confirms = self._confirms
        self._enter()
        try:
            while len(confirms):
                self._require()
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise confirms.timed_out(f"{self.host}:{self.port}", timeout)
                _set_timeval(&tv, remaining if remaining < WAIT_SLICE else WAIT_SLICE)
                with nogil:
                    status = rmq.amqp_simple_wait_frame_noblock(self._state, &frame, &tv)
                if status == rmq.AMQP_STATUS_TIMEOUT:
                    PyErr_CheckSignals()
                    continue
                if status != rmq.AMQP_STATUS_OK:
                    self._lost("wait for publisher confirms",
                               rmq.amqp_error_string2(status).decode())
                self._dispatch_frame(&frame)
                if self._state != NULL:
                    rmq.amqp_maybe_release_buffers(self._state)
        finally:
            self._leave()
        failure = confirms.failure()
        if failure is not None:
            raise failure
