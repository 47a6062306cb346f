"""Codecs (json via orjson, msgpack, yaml, pickle) and compression for message bodies."""

# Placeholder until the full codec module lands: plain orjson both ways.
import orjson


def json_dumps(obj):
    return orjson.dumps(obj)


def json_loads(data):
    return orjson.loads(data)
