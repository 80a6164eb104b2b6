#!/usr/bin/env python
# Test support, not a tutorial: publishes 64 KiB messages to a queue until
# the broker sends connection.blocked, waits (answering heartbeats) until it
# sends connection.unblocked, then publishes one more message with a
# publisher confirm. Prints "blocked <reason>", "unblocked" and "confirmed".
# Arguments: queue name, heartbeat in seconds.
import sys

import pika

from tutorial_env import connection_parameters

PUBLISH_LIMIT = 100_000

queue, heartbeat = sys.argv[1], int(sys.argv[2])
parameters = connection_parameters()
parameters.heartbeat = heartbeat
connection = pika.BlockingConnection(parameters)
events = []
connection.add_on_connection_blocked_callback(
    lambda _connection, frame: events.append(("blocked", frame.method.reason)))
connection.add_on_connection_unblocked_callback(
    lambda _connection, _frame: events.append(("unblocked", None)))
channel = connection.channel()
channel.queue_declare(queue=queue)

body = b"x" * 65536
published = 0
# basic_publish returns only once its frames are in the socket: if the
# broker stops reading (as it does once blocked) while they are not, it
# never returns, and the blocked frame is never seen here. Waiting a
# millisecond for input after each message lets the broker read as fast as
# this writes, so the socket has room when the block comes.
while not events and published < PUBLISH_LIMIT:
    channel.basic_publish(exchange="", routing_key=queue, body=body)
    published += 1
    connection.process_data_events(time_limit=0.001)
if not events:
    sys.exit(f"never blocked after {published} messages")
print(f"blocked {events[0][1]}", flush=True)

while not any(kind == "unblocked" for kind, _ in events):
    connection.process_data_events(time_limit=0.1)
print("unblocked", flush=True)

channel.confirm_delivery()
channel.basic_publish(exchange="", routing_key=queue, body=b"after the alarm")
print("confirmed", flush=True)
connection.close()
