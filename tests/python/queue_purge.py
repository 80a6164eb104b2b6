#!/usr/bin/env python
# Test support, not a tutorial: empties the named queues if they exist, so a
# test against a shared broker (differential mode) starts from a known state.
import sys

import pika

from tutorial_env import connection_parameters

connection = pika.BlockingConnection(connection_parameters())
for queue in sys.argv[1:]:
    channel = connection.channel()
    try:
        channel.queue_declare(queue=queue, passive=True)
    except pika.exceptions.ChannelClosedByBroker as error:
        if error.reply_code != 404:
            raise
        print(f" [x] {queue} absent", flush=True)
        continue
    purged = channel.queue_purge(queue=queue).method.message_count
    print(f" [x] {queue} purged {purged}", flush=True)
    channel.close()
connection.close()
