"""Read TensorBoard event files back without TensorFlow: TFRecord framing, then tensorboardX's Event protobuf."""

import struct
from pathlib import Path


def read_events(folder) -> list:
    """Every Event in every events.out.tfevents.* file under `folder`, in file then record order."""
    from tensorboardX.proto.event_pb2 import Event

    events = []
    for path in sorted(Path(folder).rglob("events.out.tfevents.*")):
        data = path.read_bytes()
        at = 0
        while at < len(data):
            (length,) = struct.unpack("<Q", data[at:at + 8])
            at += 12  # length, then its masked crc32c
            event = Event()
            event.ParseFromString(data[at:at + length])
            events.append(event)
            at += length + 4  # payload, then its crc
    return events


def scalars(events) -> dict[str, list[tuple[int, float]]]:
    """tag -> [(step, value)] of every scalar summary."""
    out = {}
    for event in events:
        for value in event.summary.value:
            if value.HasField("simple_value"):
                out.setdefault(value.tag, []).append((event.step, value.simple_value))
    return out


def images(events) -> dict[str, list[tuple[int, bytes, int, int]]]:
    """tag -> [(step, encoded PNG, width, height)] of every image summary."""
    out = {}
    for event in events:
        for value in event.summary.value:
            if value.HasField("image"):
                out.setdefault(value.tag, []).append((event.step, value.image.encoded_image_string,
                                                      value.image.width, value.image.height))
    return out
