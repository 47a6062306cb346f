# rabbitmq-c (librabbitmq >= 0.10, Debian librabbitmq-dev) declared once for fastq._speedups;
# only what the modules use. Names and layouts follow amqp.h / amqp_framing.h of 0.11.

from libc.stdint cimport (int8_t, int16_t, int32_t, int64_t, uint8_t, uint16_t, uint32_t,
                          uint64_t)


cdef extern from "<sys/time.h>" nogil:
    # declared here rather than cimported from posix.time so that Cython spells it
    # "struct timeval", as amqp.h does
    cdef struct timeval:
        long tv_sec
        long tv_usec


cdef extern from "<sys/socket.h>" nogil:
    int shutdown(int fd, int how)
    enum: SHUT_RDWR


cdef extern from "amqp.h" nogil:
    const char *amqp_version()

    ctypedef int amqp_boolean_t
    ctypedef uint32_t amqp_method_number_t
    ctypedef uint32_t amqp_flags_t
    ctypedef uint16_t amqp_channel_t

    ctypedef struct amqp_bytes_t:
        size_t len
        void *bytes

    ctypedef struct amqp_decimal_t:
        uint8_t decimals
        uint32_t value

    # tables and values refer to each other: forward-declare by struct tag
    cdef struct amqp_table_entry_t_
    cdef struct amqp_field_value_t_
    ctypedef amqp_table_entry_t_ amqp_table_entry_t
    ctypedef amqp_field_value_t_ amqp_field_value_t

    ctypedef struct amqp_table_t:
        int num_entries
        amqp_table_entry_t *entries

    ctypedef struct amqp_array_t:
        int num_entries
        amqp_field_value_t *entries

    # anonymous in C; only ever reached as amqp_field_value_t.value
    cdef union _amqp_field_value_union:
        amqp_boolean_t boolean
        int8_t i8
        uint8_t u8
        int16_t i16
        uint16_t u16
        int32_t i32
        uint32_t u32
        int64_t i64
        uint64_t u64      # also AMQP_FIELD_KIND_TIMESTAMP
        float f32
        double f64
        amqp_decimal_t decimal
        amqp_bytes_t bytes   # AMQP_FIELD_KIND_UTF8 and AMQP_FIELD_KIND_BYTES
        amqp_table_t table
        amqp_array_t array

    cdef struct amqp_field_value_t_:
        uint8_t kind
        _amqp_field_value_union value

    cdef struct amqp_table_entry_t_:
        amqp_bytes_t key
        amqp_field_value_t value

    # rabbitmq-c letters; 'l' is signed and 'L' unsigned here, the reverse of py-amqp
    # (celery-protocol.md 1.3.2)
    enum:
        AMQP_FIELD_KIND_BOOLEAN    # 't'
        AMQP_FIELD_KIND_I8         # 'b'
        AMQP_FIELD_KIND_U8         # 'B'
        AMQP_FIELD_KIND_I16        # 's'
        AMQP_FIELD_KIND_U16        # 'u'
        AMQP_FIELD_KIND_I32        # 'I'
        AMQP_FIELD_KIND_U32        # 'i'
        AMQP_FIELD_KIND_I64        # 'l'
        AMQP_FIELD_KIND_U64        # 'L'
        AMQP_FIELD_KIND_F32        # 'f'
        AMQP_FIELD_KIND_F64        # 'd'
        AMQP_FIELD_KIND_DECIMAL    # 'D'
        AMQP_FIELD_KIND_UTF8       # 'S'
        AMQP_FIELD_KIND_ARRAY      # 'A'
        AMQP_FIELD_KIND_TIMESTAMP  # 'T'
        AMQP_FIELD_KIND_TABLE      # 'F'
        AMQP_FIELD_KIND_VOID       # 'V'
        AMQP_FIELD_KIND_BYTES      # 'x'

    ctypedef struct amqp_pool_t:
        pass

    void init_amqp_pool(amqp_pool_t *pool, size_t pagesize)
    void recycle_amqp_pool(amqp_pool_t *pool)
    void empty_amqp_pool(amqp_pool_t *pool)
    void *amqp_pool_alloc(amqp_pool_t *pool, size_t amount)

    amqp_table_t amqp_empty_table

    ctypedef struct amqp_method_t:
        amqp_method_number_t id
        void *decoded

    ctypedef struct _amqp_frame_properties:
        uint16_t class_id
        uint64_t body_size
        void *decoded
        amqp_bytes_t raw

    cdef union _amqp_frame_payload:
        amqp_method_t method
        _amqp_frame_properties properties
        amqp_bytes_t body_fragment

    ctypedef struct amqp_frame_t:
        uint8_t frame_type
        amqp_channel_t channel
        _amqp_frame_payload payload

    ctypedef enum amqp_response_type_enum:
        AMQP_RESPONSE_NONE
        AMQP_RESPONSE_NORMAL
        AMQP_RESPONSE_LIBRARY_EXCEPTION
        AMQP_RESPONSE_SERVER_EXCEPTION

    ctypedef struct amqp_rpc_reply_t:
        amqp_response_type_enum reply_type
        amqp_method_t reply
        int library_error

    ctypedef enum amqp_sasl_method_enum:
        AMQP_SASL_METHOD_PLAIN

    cdef struct amqp_connection_state_t_
    ctypedef amqp_connection_state_t_ *amqp_connection_state_t
    ctypedef struct amqp_socket_t:
        pass

    enum:
        AMQP_STATUS_OK
        AMQP_STATUS_TIMEOUT
        AMQP_STATUS_UNEXPECTED_STATE

    amqp_connection_state_t amqp_new_connection()
    int amqp_destroy_connection(amqp_connection_state_t state)
    int amqp_get_sockfd(amqp_connection_state_t state)
    int amqp_get_frame_max(amqp_connection_state_t state)
    int amqp_set_handshake_timeout(amqp_connection_state_t state, const timeval *timeout)
    int amqp_set_rpc_timeout(amqp_connection_state_t state, const timeval *timeout)
    int amqp_socket_open_noblock(amqp_socket_t *self, const char *host, int port,
                                 const timeval *timeout)
    amqp_rpc_reply_t amqp_login_with_properties(amqp_connection_state_t state,
                                                const char *vhost, int channel_max,
                                                int frame_max, int heartbeat,
                                                const amqp_table_t *properties,
                                                amqp_sasl_method_enum sasl_method, ...)
    amqp_rpc_reply_t amqp_get_rpc_reply(amqp_connection_state_t state)
    amqp_rpc_reply_t amqp_connection_close(amqp_connection_state_t state, int code)
    const char *amqp_error_string2(int err)

    void amqp_maybe_release_buffers(amqp_connection_state_t state)
    amqp_boolean_t amqp_frames_enqueued(amqp_connection_state_t state)
    int amqp_simple_wait_frame(amqp_connection_state_t state, amqp_frame_t *decoded_frame)
    int amqp_simple_wait_frame_noblock(amqp_connection_state_t state,
                                       amqp_frame_t *decoded_frame, const timeval *tv)
    int amqp_send_method(amqp_connection_state_t state, amqp_channel_t channel,
                         amqp_method_number_t id, void *decoded)



cdef extern from "amqp_framing.h" nogil:
    # writes the property flags and the properties present; returns the length written,
    # or a negative amqp_status_enum when ``encoded`` is too short
    int amqp_encode_properties(uint16_t class_id, void *decoded, amqp_bytes_t encoded)

    enum:
        AMQP_FRAME_METHOD
        AMQP_FRAME_HEADER
        AMQP_FRAME_BODY
        AMQP_REPLY_SUCCESS

    # method ids, (class, method) as in the AMQP 0-9-1 spec
    enum:
        AMQP_CONNECTION_CLOSE_METHOD      # connection.close (10, 50)
        AMQP_CONNECTION_CLOSE_OK_METHOD   # connection.close-ok (10, 51)
        AMQP_CHANNEL_FLOW_METHOD          # channel.flow (20, 20)
        AMQP_CHANNEL_FLOW_OK_METHOD       # channel.flow-ok (20, 21)
        AMQP_CHANNEL_CLOSE_METHOD         # channel.close (20, 40)
        AMQP_CHANNEL_CLOSE_OK_METHOD      # channel.close-ok (20, 41)
        AMQP_BASIC_CANCEL_METHOD          # basic.cancel (60, 30), sent by the server
        AMQP_BASIC_RETURN_METHOD          # basic.return (60, 50)
        AMQP_BASIC_DELIVER_METHOD         # basic.deliver (60, 60)
        AMQP_BASIC_GET_OK_METHOD          # basic.get-ok (60, 71)
        AMQP_BASIC_GET_EMPTY_METHOD       # basic.get-empty (60, 72)
        AMQP_BASIC_ACK_METHOD             # basic.ack (60, 80), a publisher confirm
        AMQP_BASIC_NACK_METHOD            # basic.nack (60, 120), a publisher confirm

    ctypedef struct amqp_connection_close_t:
        uint16_t reply_code
        amqp_bytes_t reply_text
        uint16_t class_id
        uint16_t method_id

    ctypedef struct amqp_connection_close_ok_t:
        char dummy

    ctypedef struct amqp_channel_close_t:
        uint16_t reply_code
        amqp_bytes_t reply_text
        uint16_t class_id
        uint16_t method_id

    ctypedef struct amqp_channel_close_ok_t:
        char dummy

    ctypedef struct amqp_channel_flow_t:
        amqp_boolean_t active

    ctypedef struct amqp_channel_flow_ok_t:
        amqp_boolean_t active

    ctypedef struct amqp_channel_open_ok_t:
        amqp_bytes_t channel_id

    ctypedef struct amqp_exchange_declare_ok_t:
        char dummy

    ctypedef struct amqp_queue_declare_ok_t:
        amqp_bytes_t queue
        uint32_t message_count
        uint32_t consumer_count

    ctypedef struct amqp_queue_bind_ok_t:
        char dummy

    ctypedef struct amqp_queue_purge_ok_t:
        uint32_t message_count

    ctypedef struct amqp_queue_delete_ok_t:
        uint32_t message_count

    ctypedef struct amqp_basic_qos_ok_t:
        char dummy

    ctypedef struct amqp_basic_consume_ok_t:
        amqp_bytes_t consumer_tag

    ctypedef struct amqp_basic_cancel_t:
        amqp_bytes_t consumer_tag
        amqp_boolean_t nowait

    ctypedef struct amqp_basic_cancel_ok_t:
        amqp_bytes_t consumer_tag

    ctypedef struct amqp_basic_return_t:
        uint16_t reply_code
        amqp_bytes_t reply_text
        amqp_bytes_t exchange
        amqp_bytes_t routing_key

    ctypedef struct amqp_basic_deliver_t:
        amqp_bytes_t consumer_tag
        uint64_t delivery_tag
        amqp_boolean_t redelivered
        amqp_bytes_t exchange
        amqp_bytes_t routing_key

    ctypedef struct amqp_basic_get_ok_t:
        uint64_t delivery_tag
        amqp_boolean_t redelivered
        amqp_bytes_t exchange
        amqp_bytes_t routing_key
        uint32_t message_count

    ctypedef struct amqp_basic_ack_t:
        uint64_t delivery_tag
        amqp_boolean_t multiple

    ctypedef struct amqp_basic_nack_t:
        uint64_t delivery_tag
        amqp_boolean_t multiple
        amqp_boolean_t requeue

    ctypedef struct amqp_confirm_select_ok_t:
        char dummy

    # basic.properties flag bits (class basic, 60)
    enum:
        AMQP_BASIC_CONTENT_TYPE_FLAG
        AMQP_BASIC_CONTENT_ENCODING_FLAG
        AMQP_BASIC_HEADERS_FLAG
        AMQP_BASIC_DELIVERY_MODE_FLAG
        AMQP_BASIC_PRIORITY_FLAG
        AMQP_BASIC_CORRELATION_ID_FLAG
        AMQP_BASIC_REPLY_TO_FLAG
        AMQP_BASIC_EXPIRATION_FLAG
        AMQP_BASIC_MESSAGE_ID_FLAG
        AMQP_BASIC_TIMESTAMP_FLAG
        AMQP_BASIC_TYPE_FLAG
        AMQP_BASIC_USER_ID_FLAG
        AMQP_BASIC_APP_ID_FLAG
        AMQP_BASIC_CLUSTER_ID_FLAG

    ctypedef struct amqp_basic_properties_t:
        amqp_flags_t _flags
        amqp_bytes_t content_type
        amqp_bytes_t content_encoding
        amqp_table_t headers
        uint8_t delivery_mode
        uint8_t priority
        amqp_bytes_t correlation_id
        amqp_bytes_t reply_to
        amqp_bytes_t expiration
        amqp_bytes_t message_id
        uint64_t timestamp
        amqp_bytes_t type
        amqp_bytes_t user_id
        amqp_bytes_t app_id
        amqp_bytes_t cluster_id

    amqp_channel_open_ok_t *amqp_channel_open(amqp_connection_state_t state,
                                              amqp_channel_t channel)
    amqp_exchange_declare_ok_t *amqp_exchange_declare(
        amqp_connection_state_t state, amqp_channel_t channel, amqp_bytes_t exchange,
        amqp_bytes_t type, amqp_boolean_t passive, amqp_boolean_t durable,
        amqp_boolean_t auto_delete, amqp_boolean_t internal, amqp_table_t arguments)
    amqp_queue_declare_ok_t *amqp_queue_declare(
        amqp_connection_state_t state, amqp_channel_t channel, amqp_bytes_t queue,
        amqp_boolean_t passive, amqp_boolean_t durable, amqp_boolean_t exclusive,
        amqp_boolean_t auto_delete, amqp_table_t arguments)
    amqp_queue_bind_ok_t *amqp_queue_bind(
        amqp_connection_state_t state, amqp_channel_t channel, amqp_bytes_t queue,
        amqp_bytes_t exchange, amqp_bytes_t routing_key, amqp_table_t arguments)
    amqp_queue_purge_ok_t *amqp_queue_purge(amqp_connection_state_t state,
                                            amqp_channel_t channel, amqp_bytes_t queue)
    amqp_queue_delete_ok_t *amqp_queue_delete(
        amqp_connection_state_t state, amqp_channel_t channel, amqp_bytes_t queue,
        amqp_boolean_t if_unused, amqp_boolean_t if_empty)
    amqp_basic_qos_ok_t *amqp_basic_qos(amqp_connection_state_t state, amqp_channel_t channel,
                                        uint32_t prefetch_size, uint16_t prefetch_count,
                                        amqp_boolean_t is_global)
    amqp_basic_consume_ok_t *amqp_basic_consume(
        amqp_connection_state_t state, amqp_channel_t channel, amqp_bytes_t queue,
        amqp_bytes_t consumer_tag, amqp_boolean_t no_local, amqp_boolean_t no_ack,
        amqp_boolean_t exclusive, amqp_table_t arguments)
    amqp_basic_cancel_ok_t *amqp_basic_cancel(amqp_connection_state_t state,
                                              amqp_channel_t channel, amqp_bytes_t consumer_tag)
    amqp_confirm_select_ok_t *amqp_confirm_select(amqp_connection_state_t state,
                                                  amqp_channel_t channel)


cdef extern from "amqp.h" nogil:
    # these take amqp_basic_properties_t, declared above from amqp_framing.h
    int amqp_basic_publish(amqp_connection_state_t state, amqp_channel_t channel,
                           amqp_bytes_t exchange, amqp_bytes_t routing_key,
                           amqp_boolean_t mandatory, amqp_boolean_t immediate,
                           const amqp_basic_properties_t *properties, amqp_bytes_t body)
    int amqp_basic_ack(amqp_connection_state_t state, amqp_channel_t channel,
                       uint64_t delivery_tag, amqp_boolean_t multiple)
    int amqp_basic_reject(amqp_connection_state_t state, amqp_channel_t channel,
                          uint64_t delivery_tag, amqp_boolean_t requeue)
    int amqp_basic_nack(amqp_connection_state_t state, amqp_channel_t channel,
                        uint64_t delivery_tag, amqp_boolean_t multiple, amqp_boolean_t requeue)
    amqp_rpc_reply_t amqp_basic_get(amqp_connection_state_t state, amqp_channel_t channel,
                                    amqp_bytes_t queue, amqp_boolean_t no_ack)

    ctypedef struct amqp_message_t:
        amqp_basic_properties_t properties
        amqp_bytes_t body
        amqp_pool_t pool

    amqp_rpc_reply_t amqp_read_message(amqp_connection_state_t state, amqp_channel_t channel,
                                       amqp_message_t *message, int flags)
    void amqp_destroy_message(amqp_message_t *message)

    ctypedef struct amqp_envelope_t:
        amqp_channel_t channel
        amqp_bytes_t consumer_tag
        uint64_t delivery_tag
        amqp_boolean_t redelivered
        amqp_bytes_t exchange
        amqp_bytes_t routing_key
        amqp_message_t message

    amqp_rpc_reply_t amqp_consume_message(amqp_connection_state_t state,
                                          amqp_envelope_t *envelope, const timeval *timeout,
                                          int flags)
    void amqp_destroy_envelope(amqp_envelope_t *envelope)


cdef extern from "amqp_tcp_socket.h" nogil:
    amqp_socket_t *amqp_tcp_socket_new(amqp_connection_state_t state)


cdef extern from "amqp_ssl_socket.h" nogil:
    amqp_socket_t *amqp_ssl_socket_new(amqp_connection_state_t state)
    int amqp_ssl_socket_set_cacert(amqp_socket_t *self, const char *cacert)
    int amqp_ssl_socket_set_key(amqp_socket_t *self, const char *cert, const char *key)
    void amqp_ssl_socket_set_verify_peer(amqp_socket_t *self, amqp_boolean_t verify)
    void amqp_ssl_socket_set_verify_hostname(amqp_socket_t *self, amqp_boolean_t verify)
